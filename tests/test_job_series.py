"""A job's live series (Job.series, written by job.report(series=...)): throttled writes, nothing lost at the
end, a resumed run continuing its curve, long runs thinned; and on a real worker a fine-tuning's loss
curve in GET /api/jobs/{id}/ while it runs and after, matching the losses in its result."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from console.jobs import models as job_models
from console.jobs.models import Job
from tests.api_rows import make_model
from tests.conftest import wait_for
from tests.serving_rows import stored_version
from tests.test_finetune_jobs import QA, dataset, ended, post


def running(user: Any = None) -> Job:
    job = Job.objects.create(kind="finetune", params={}, created_by=user)
    assert job.claim("test-worker")
    return job


def stored(job: Job) -> dict[str, Any]:
    return Job.objects.get(pk=job.pk).series


@pytest.mark.django_db
def test_points_are_written_at_most_every_flush_interval_and_all_of_them_at_the_end(bob) -> None:
    job = running(bob)
    job.report(0.1, "step 1", series={"train_loss": (1, 2.5)})
    assert stored(job) == {"train_loss": [[1, 2.5]]}  # the first point at once
    job.report(0.2, "step 2", series={"train_loss": (2, 2.25)})
    assert stored(job) == {"train_loss": [[1, 2.5]]}  # within the interval: kept for the next write
    assert Job.objects.get(pk=job.pk).progress_message == "step 2"
    job.report(None, None, series={"eval_loss": [(0, 3.0), (2, 2.0)]}, flush=True)
    assert stored(job) == {"train_loss": [[1, 2.5], [2, 2.25]], "eval_loss": [[0, 3.0], [2, 2.0]]}
    job.report(0.3, "step 3", series={"train_loss": (3, float("nan"))})
    job.succeed({"ok": True})
    assert stored(job)["train_loss"][-1] == [3, None]  # the ending writes what was left; NaN is null in JSON


@pytest.mark.django_db
def test_a_restarted_job_continues_its_curve_from_the_step_it_resumes_at(bob) -> None:
    job = running(bob)
    for step in range(1, 9):
        job.report(step / 10, None, series={"train_loss": (step, 10.0 - step)}, flush=True)
    # the worker died after step 8; its last checkpoint was step 5. A redelivery restarts the job...
    Job.objects.filter(pk=job.pk).update(heartbeat_at=job.heartbeat_at - timedelta(hours=1))  # its lease expired
    again = Job.objects.get(pk=job.pk)
    assert again.restart("other-worker")
    assert [x for x, _ in stored(again)["train_loss"]] == list(range(1, 9))  # the curve survives the restart
    for step in range(6, 11):
        again.report(step / 10, None, series={"train_loss": (step, 20.0 - step)}, flush=True)
    assert stored(again)["train_loss"] == ([[s, 10.0 - s] for s in range(1, 6)] + [[s, 20.0 - s] for s in range(6, 11)])


@pytest.mark.django_db
def test_a_long_series_is_thinned_keeping_its_ends(bob, monkeypatch) -> None:
    monkeypatch.setattr(job_models, "SERIES_FLUSH_S", 3600.0)
    job = running(bob)
    for step in range(1, 2501):
        job.report(None, None, series={"train_loss": (step, 1.0 / step)}, flush=step == 2500)
    points = stored(job)["train_loss"]
    xs = [x for x, _ in points]
    assert len(points) <= job_models.MAX_SERIES_POINTS and xs[0] == 1 and xs[-1] == 2500 and xs == sorted(xs)


@pytest.mark.django_db(transaction=True)
def test_a_fine_tunings_loss_curve_is_in_the_api_while_it_runs_and_after(celery_worker, bob, maintainer_api,
                                                                         user_api, llama_dir) -> None:
    stored_version(make_model("tiny", owner=bob), llama_dir)
    dataset("sums", "qa", QA, bob)
    steps = 120
    response = post(maintainer_api, model="tiny", version=1, dataset="sums", max_steps=steps, batch_size=4,
                    learning_rate=1e-3, eval_fraction=0.25)
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert response.json()["series"] == {}

    def curve_while_running() -> dict[str, Any] | None:
        body = user_api.get(f"/api/jobs/{job_id}/").json()
        return body if body["status"] == "running" and body["series"].get("train_loss") else None

    live = wait_for(curve_while_running, 120, interval=0.1, what="a loss curve while the job runs")
    assert 1 <= len(live["series"]["train_loss"]) < steps and live["series"]["train_loss"][0][0] == 1

    done = ended(job_id)
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
    series = user_api.get(f"/api/jobs/{job_id}/").json()["series"]
    assert series["train_loss"] == [[step, loss] for step, loss in done.result["losses"]]
    assert [x for x, _ in series["train_loss"]] == list(range(1, steps + 1))
    assert series["eval_loss"] == [[0, done.result["eval_loss_before"]], [steps, done.result["eval_loss"]]]
    assert series["eval_loss"][1][1] < series["eval_loss"][0][1]  # it learned something


def test_the_series_is_in_the_openapi_schema_read_only(tmp_path) -> None:
    import yaml
    from django.core.management import call_command

    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out))
    job = yaml.safe_load(out.read_text())["components"]["schemas"]["Job"]
    assert "series" in job["properties"] and job["properties"]["series"]["readOnly"] is True
    assert job["properties"]["series"]["additionalProperties"]["type"] == "array"
