"""The hardened job base: ETA, re-run with the same parameters, per-kind soft and hard time limits,
redelivery after a dead worker (run again up to 3 deliveries for idempotent kinds, else fail), and the
jobs page's filters. run_job is the real Celery task, called in this process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

import tests.job_kinds  # noqa: F401 - registers test-sleep
from console.audit.models import AuditEvent
from console.jobs import kinds
from console.jobs.models import Job, JobTimedOut
from tests.api_rows import error_of
from workers.tasks import run_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def retry_kind() -> Iterator[str]:
    """An idempotent kind users may start, with a one-second soft and hard limit."""

    def validate(params: dict[str, Any], user: Any) -> dict[str, Any]:
        if params.get("steps", 1) > 10:
            raise ValidationError({"steps": "steps must be at most 10."})
        return params

    kinds.register(kinds.JobKind(name="test-retry", handler="tests.job_kinds.sleep_handler", validate=validate,
                                 user_creatable=True, retry_on_worker_lost=True, soft_time_limit=1, time_limit=1))
    yield "test-retry"
    kinds.KINDS.pop("test-retry")


def started(kind: str, user: Any, seconds_ago: float = 0, **fields: Any) -> Job:
    job = Job.objects.create(kind=kind, created_by=user, params={"steps": 2, "sleep": 0})
    job.claim("worker-1")
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=seconds_ago), **fields)
    job.refresh_from_db()
    return job


def dead() -> dict[str, Any]:
    """The fields of a job whose worker died: its heartbeat (the lease) stopped over an hour ago."""
    return {"heartbeat_at": timezone.now() - timedelta(hours=1)}


def test_a_running_job_estimates_the_time_left_from_its_pace(bob):
    job = started("test-sleep", bob, seconds_ago=10, progress=0.25)
    assert job.eta_s == pytest.approx(30, abs=1)
    assert started("test-sleep", bob, progress=0.0).eta_s is None
    assert Job.objects.create(kind="test-sleep").eta_s is None


def test_the_api_shows_deliveries_and_eta(bob, user_api):
    job = started("test-sleep", bob, seconds_ago=20, progress=0.5)
    body = user_api.get(f"/api/jobs/{job.pk}/").json()
    assert body["deliveries"] == 1 and body["eta_s"] == pytest.approx(20, abs=1)


def test_a_job_is_re_run_with_the_same_parameters_and_audited(retry_kind, bob, maintainer_api):
    old = Job.objects.create(kind=retry_kind, created_by=bob, params={"steps": 3}, status="failed")
    response = maintainer_api.post(f"/api/jobs/{old.pk}/rerun")
    assert response.status_code == 202, response.content
    new = Job.objects.get(pk=response.json()["id"])
    assert (new.kind, new.params, new.status, new.created_by) == (retry_kind, {"steps": 3}, "queued", bob)
    event = AuditEvent.objects.get(action="job.rerun")
    assert event.data["rerun_of"] == old.pk and event.target_id == str(new.pk)


def test_a_re_run_validates_the_parameters_again(retry_kind, bob, maintainer_api):
    old = Job.objects.create(kind=retry_kind, created_by=bob, params={"steps": 30}, status="failed")
    assert error_of(maintainer_api.post(f"/api/jobs/{old.pk}/rerun"), 400)["field"] == "params.steps"


def test_only_kinds_users_may_start_can_be_re_run(bob, maintainer_api, user_api):
    imported = Job.objects.create(kind="import", created_by=bob, status="failed")
    assert "cannot be re-run" in error_of(maintainer_api.post(f"/api/jobs/{imported.pk}/rerun"), 409)["message"]
    assert error_of(user_api.post(f"/api/jobs/{imported.pk}/rerun"), 403)


def test_a_job_past_its_soft_time_limit_fails_at_its_next_report(retry_kind, bob):
    job = started(retry_kind, bob, seconds_ago=5)
    with pytest.raises(JobTimedOut, match="soft time limit of 1 s"):
        job.report(0.5, "still going")


def test_the_reaper_fails_a_heartbeating_job_past_its_hard_time_limit(retry_kind, bob):
    stuck = started(retry_kind, bob, seconds_ago=120)
    fine = started("test-sleep", bob, seconds_ago=120)
    assert Job.reap_stale(older_than_s=60) == [stuck.pk]
    stuck.refresh_from_db()
    assert stuck.status == "failed" and "hard time limit of 1 s" in stuck.error
    assert Job.objects.get(pk=fine.pk).status == "running"


def test_a_redelivery_after_a_dead_worker_runs_an_idempotent_job_again_to_success(retry_kind, bob):
    job = started(retry_kind, bob, **dead())  # delivery 1 died mid-run
    run_job(job.pk)  # the broker delivers it again
    job.refresh_from_db()
    assert job.status == "succeeded" and job.deliveries == 2 and job.result == {"steps": 2}
    assert any("died; running it again (delivery 2 of at most 3)" in line for line in job.log)


def test_the_third_dead_worker_is_the_last_then_the_job_fails_with_the_reason(retry_kind, bob):
    job = started(retry_kind, bob, deliveries=3, **dead())
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.deliveries == 4
    assert job.error == "The worker running this job died 3 times; gave up after 3 deliveries."


def test_a_redelivered_job_of_a_kind_that_is_not_idempotent_fails_at_once(bob):
    job = started("test-sleep", bob, **dead())
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.error == "The worker running this job died (delivery 2 of at most 3)."


@pytest.mark.django_db(transaction=True)  # the holder's heartbeat thread writes on its own connection
@pytest.mark.parametrize("kind", ["test-sleep", "test-retry"])
def test_a_redelivery_while_the_job_still_beats_leaves_it_to_the_run_that_holds_it(retry_kind, kind, bob, settings):
    from workers.tasks import _Heartbeat

    settings.TAUON_JOB_HEARTBEAT_S = 0.2
    job = started(kind, bob, progress=0.5)  # delivery 1 is alive: its heartbeat thread beats
    beat = _Heartbeat(job)
    beat.start()
    try:
        run_job(job.pk)  # the broker's visibility timeout passed: it delivers the message again
    finally:
        beat.stopped.set()
        beat.join()
    again = Job.objects.get(pk=job.pk)
    assert (again.status, again.progress, again.lease, again.started_at) == ("running", 0.5, job.lease, job.started_at)
    assert again.deliveries == 2 and not again.error
    job.report(0.75, "still mine")  # the holder goes on, and ends the job
    assert job.succeed({"ok": True}) and Job.objects.get(pk=job.pk).status == "succeeded"


def test_a_redelivery_just_after_its_run_died_takes_over_once_no_beat_came(retry_kind, bob, settings):
    settings.TAUON_JOB_HEARTBEAT_S = 0.2
    job = started(retry_kind, bob)  # it beat a moment ago, then its process was killed: no beat comes
    run_job(job.pk)
    done = Job.objects.get(pk=job.pk)
    assert done.status == "succeeded" and done.lease != job.lease and done.deliveries == 2


@pytest.fixture
def resumable_kind() -> Iterator[str]:
    kinds.register(kinds.JobKind(name="test-resume", handler="tests.job_kinds.sleep_handler",
                                 retry_on_worker_lost=True, resumable=True))
    yield "test-resume"
    kinds.KINDS.pop("test-resume")


def test_the_reaper_queues_a_resumable_job_again_and_its_next_run_carries_on(resumable_kind, bob):
    job = started(resumable_kind, bob, progress=0.5, **dead())  # its worker died half way
    assert Job.reap_stale(older_than_s=60) == [job.pk]
    again = Job.objects.get(pk=job.pk)
    assert (again.status, again.lease, again.started_at) == ("queued", "", None)
    assert "queued again to carry on where it stopped (delivery 2 of at most 3)" in again.log[-1]
    run_job(job.pk)  # the message the reaper sent
    run_job(job.pk)  # the dead run's own message, redelivered later: the job has ended, it leaves
    done = Job.objects.get(pk=job.pk)
    assert done.status == "succeeded" and done.deliveries == 3 and done.lease != job.lease


def test_the_reaper_fails_a_resumable_job_out_of_deliveries_or_with_a_cancel_pending(resumable_kind, bob):
    spent = started(resumable_kind, bob, deliveries=3, **dead())
    cancelled = started(resumable_kind, bob, cancel_requested=True, **dead())
    assert sorted(Job.reap_stale(older_than_s=60)) == [spent.pk, cancelled.pk]
    assert [Job.objects.get(pk=j.pk).status for j in (spent, cancelled)] == ["failed", "failed"]


def test_a_redelivered_job_with_a_cancel_pending_ends_cancelled(retry_kind, bob):
    job = started(retry_kind, bob, cancel_requested=True, **dead())
    run_job(job.pk)
    assert Job.objects.get(pk=job.pk).status == "cancelled"


def test_the_jobs_page_filters_by_creator_and_activity_and_offers_a_re_run(retry_kind, alice, bob):
    Job.objects.create(kind="test-sleep", created_by=alice, status="succeeded")
    mine = Job.objects.create(kind=retry_kind, created_by=bob, status="failed")
    running = started("test-sleep", bob)
    client = Client()
    client.force_login(bob)
    page = client.get("/jobs/?created_by=bob").content.decode()
    assert f'data-job-row="{mine.pk}"' in page and f'data-job-row="{running.pk}"' in page and page.count("data-job-row") == 2
    page = client.get("/jobs/?active=true").content.decode()
    assert page.count("data-job-row") == 1 and f'data-job-row="{running.pk}"' in page
    detail = client.get(f"/jobs/{mine.pk}/").content.decode()
    assert 'id="rerun-form"' in detail
    response = client.post(f"/jobs/{mine.pk}/rerun/")
    new = Job.objects.latest("id")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{new.pk}/" and new.params == mine.params


def test_jobs_filter_by_the_model_their_params_name(bob, user_api):
    Job.objects.create(kind="evaluate", created_by=bob, params={"model": "tiny", "versions": [1]})
    Job.objects.create(kind="evaluate", created_by=bob, params={"model": "other", "versions": [1]})
    assert user_api.get("/api/jobs/?model=tiny").json()["count"] == 1
    assert user_api.get("/api/jobs/?active=false").json()["count"] == 0
