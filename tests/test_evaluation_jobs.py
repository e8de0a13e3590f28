"""Evaluation jobs on real Celery workers: results per version through POST /api/jobs/, cancel within
seconds, and a worker SIGKILLed mid-evaluation (the pool process: the job is re-run to success; the whole
worker: the job ends failed with the reason) while other queues keep flowing; no partial result is
ever stored."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.core.management import call_command

import tests.job_kinds  # noqa: F401 - registers test-sleep
from console.evaluation.models import EvaluationResult
from console.jobs.models import Job
from console.registry.models import Model
from tests.api_rows import make_model
from tests.conftest import WorkerProcess, wait_for
from tests.serving_rows import stored_version

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"context_length": 64, "stride": 32, "latency_requests": 2, "max_new_tokens": 4, "max_examples": 4,
        "engine": {"kv_cache_bytes": 4 << 20, "max_num_seqs": 4}}


def two_versions(folder: Path, owner: Any, name: str = "tiny") -> Model:
    model = make_model(name, owner=owner)
    parent = stored_version(model, folder)
    stored_version(model, folder, parent=parent, total_size=2468)
    return model


def start(api: Any, model: str, versions: list[int], dataset: str, config: dict[str, Any]) -> Job:
    response = api.post("/api/jobs/", {"kind": "evaluate", "params": {
        "model": model, "versions": versions, "dataset": dataset, "config": config}}, format="json")
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def ended(job: Job, timeout: float = 120) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed", "cancelled"]).first(),
                    timeout, what=f"job #{job.pk} to end")


def test_an_evaluation_stores_metrics_per_version_and_answers_them_in_the_result(
        celery_worker, bob, maintainer_api, llama_dir):
    call_command("import_datasets")
    two_versions(llama_dir, bob)
    job = start(maintainer_api, "tiny", [1, 2], "plain-english", FAST)
    done = ended(job)
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
    metrics = done.result["metrics"]
    assert set(metrics) == {"1", "2"}
    for figures in metrics.values():
        assert figures["perplexity"] > 1 and figures["tokens_per_s"] > 0 and figures["ttft_s"] > 0
        assert figures["peak_memory_bytes"] >= 0 and figures["context_length"] == 64
    assert metrics["1"]["perplexity"] == pytest.approx(metrics["2"]["perplexity"])  # the same weights
    assert metrics["2"]["size_bytes"] == 2468
    rows = EvaluationResult.objects.filter(job=done).order_by("version__number")
    assert [r.version.number for r in rows] == [1, 2] and rows[0].metrics == metrics["1"]
    assert [r.runtime for r in rows] == ["torch", "torch"]  # no GGUF: its speed was measured on torch
    assert any("v2: perplexity" in line for line in done.log)
    body = maintainer_api.get("/api/evaluations/?model=tiny&version=2").json()
    assert body["count"] == 1 and body["results"][0]["metrics"]["perplexity"] == metrics["2"]["perplexity"]
    assert body["results"][0]["runtime"] == "torch"


def test_a_qa_evaluation_scores_the_answers(celery_worker, bob, maintainer_api, llama_dir):
    call_command("import_datasets")
    two_versions(llama_dir, bob)
    done = ended(start(maintainer_api, "tiny", [2], "simple-qa", FAST))
    assert done.status == "succeeded", done.error
    figures = done.result["metrics"]["2"]
    assert figures["examples"] == 4 and 0 <= figures["exact_match"] <= figures["token_f1"] <= 1


def test_cancel_stops_a_running_evaluation_within_seconds_and_stores_nothing(
        celery_worker, bob, maintainer_api, llama_dir):
    call_command("import_datasets")
    two_versions(llama_dir, bob)
    slow = {**FAST, "stride": 1}  # a window per token: long enough to cancel half way
    job = start(maintainer_api, "tiny", [1, 2], "plain-english", slow)
    wait_for(lambda: Job.objects.filter(pk=job.pk, status="running", progress__gt=0.05).exists(), 120,
             what="the evaluation to be under way")
    asked = time.monotonic()
    assert maintainer_api.post(f"/api/jobs/{job.pk}/cancel").status_code == 202
    done = ended(job, timeout=30)
    took = time.monotonic() - asked
    assert done.status == "cancelled" and took < 5, (done.status, took)
    assert not EvaluationResult.objects.exists()


# --- a worker killed mid-evaluation -------------------------------------------------------------------------
def evaluation_worker(name: str, **kw: Any) -> WorkerProcess:
    return WorkerProcess(name, queues=name, **kw).start()


def long_evaluation(api: Any, owner: Any, folder: Path) -> Job:
    """A real evaluation (a tiny model, a window every other token: a few seconds) that is under way."""
    call_command("import_datasets")
    model = make_model("killed", owner=owner)
    stored_version(model, folder)
    job = start(api, "killed", [1], "plain-english", {**FAST, "stride": 2})
    wait_for(lambda: Job.objects.filter(pk=job.pk, status="running", progress__gt=0.1).exists(), 120,
             what="the evaluation to be under way")
    return job


def other_queues_flow(owner: Any) -> None:
    """A job on the session worker's queue runs to success meanwhile."""
    other = Job.enqueue("test-sleep", {"steps": 2}, owner)
    assert ended(other, 60).status == "succeeded"


def test_a_sigkilled_pool_process_mid_evaluation_is_re_run_to_success(
        celery_worker, bob, maintainer_api, llama_dir, settings):
    settings.TAUON_EVALUATION_QUEUE = "evalkill-pool"
    worker = evaluation_worker("evalkill-pool", extra=("--pool", "prefork"))
    try:
        job = long_evaluation(maintainer_api, bob, llama_dir)
        children = psutil.Process(worker.proc.pid).children()  # type: ignore[union-attr]
        assert len(children) == 1
        os.kill(children[0].pid, signal.SIGKILL)
        other_queues_flow(bob)
        done = ended(job, timeout=180)
        assert done.status == "succeeded", done.error + worker.log()[-3000:]
        assert done.deliveries == 2 and any("died; running it again (delivery 2 of at most 3)" in x for x in done.log)
        assert EvaluationResult.objects.filter(version__model__name="killed").count() == 1
    finally:
        worker.stop()


def test_a_sigkilled_worker_mid_evaluation_ends_failed_with_the_reason_and_stores_nothing(
        celery_worker, bob, maintainer_api, llama_dir, settings):
    settings.TAUON_EVALUATION_QUEUE = "evalkill-worker"
    worker = evaluation_worker("evalkill-worker")
    job = long_evaluation(maintainer_api, bob, llama_dir)
    worker.kill()  # SIGKILL to the whole worker: nothing of it survives to report
    other_queues_flow(bob)
    time.sleep(3)
    assert Job.reap_stale(older_than_s=2) == [job.pk]  # what the beat-driven reaper does every 30 s
    done = Job.objects.get(pk=job.pk)
    assert done.status == "failed" and "stopped responding" in done.error and "presumed dead" in done.error
    assert not EvaluationResult.objects.exists()
