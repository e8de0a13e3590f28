"""Two runs of the same batch job (the broker redelivers a message once its visibility timeout passes, whether or
not the first run still goes): a redelivery that finds the first run alive (it beats) leaves the job to it; one
that finds its run dead (SIGKILLed: no beat comes) takes the job over and resumes it. Either way every line is answered
exactly once and the batch has one output file. run_job is the real Celery task, in a process of its own for the
first run and in this process for the redelivery."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from django.test import override_settings

from console.batches.choices import BatchStatus, LineStatus
from console.batches.models import Batch, BatchFile
from console.jobs.models import Job
from tests.conftest import ROOT, WorkerProcess, wait_for
from tests.serving_rows import deploy
from tests.test_batches_serving import chat_line, jsonl
from workers.tasks import run_job

pytestmark = pytest.mark.django_db(transaction=True)


def first_run(batch: Batch) -> subprocess.Popen[bytes]:
    """The first delivery of the batch's job: the whole task (claim, heartbeat/lease, body) in its own process."""
    code = f"import django; django.setup(); from workers.tasks import run_job; run_job({batch.job.pk})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=WorkerProcess("batch-first").env(),
                            start_new_session=True)


def started_batch(charlie, lines: int) -> tuple[Batch, list[dict]]:  # type: ignore[no-untyped-def]
    rows = [chat_line(f"line-{i}", f"Story {i}", model="slow", max_tokens=48) for i in range(lines)]
    source = BatchFile.upload(charlie, "k.jsonl", "batch", [jsonl(rows)], len(jsonl(rows)))
    with override_settings(TAUON_BATCH_QUEUE="nobody-listens"):  # the test plays the worker
        batch = Batch.start(charlie, source.id, "/v1/chat/completions", "24h")
    return batch, rows


def answered(batch: Batch) -> int:
    return batch.lines.filter(status=LineStatus.SUCCEEDED).count()


def assert_every_line_once(batch: Batch, rows: list[dict]) -> None:  # type: ignore[type-arg]
    batch.refresh_from_db()
    assert batch.status == BatchStatus.COMPLETED
    out = [json.loads(line) for line in BatchFile.objects.get(pk=batch.output_file_id).path.read_text().splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(r["custom_id"] for r in rows)  # none lost, none twice
    assert BatchFile.objects.filter(purpose="batch_output").count() == 1  # one run wrote the files


def test_a_redelivery_while_the_first_run_is_alive_leaves_the_job_to_it(serving, web_server, slow_llama_dir,
                                                                        charlie, bob):
    deploy("slow", slow_llama_dir, owner=bob)
    batch, rows = started_batch(charlie, 64)  # several waves of the deployment's seats: it runs on meanwhile
    proc = first_run(batch)
    try:
        wait_for(lambda: answered(batch) >= 3, timeout=120, what="three answered lines")
        holder = Job.objects.get(pk=batch.job.pk)
        assert holder.status == "running" and holder.lease
        took = time.monotonic()
        run_job(holder.pk)  # the redelivered message
        assert time.monotonic() - took < 5  # it left at once: no second run fed the batch
        after = Job.objects.get(pk=holder.pk)
        assert (after.status, after.lease, after.started_at, after.deliveries) == \
            ("running", holder.lease, holder.started_at, 2)
        assert proc.wait(timeout=240) == 0  # the first run finishes the batch
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert Job.objects.get(pk=holder.pk).status == "succeeded"
    assert_every_line_once(batch, rows)


def test_a_redelivery_after_the_first_run_died_takes_the_job_over_and_resumes_it(serving, web_server,
                                                                               slow_llama_dir, charlie, bob):
    deploy("slow", slow_llama_dir, owner=bob)
    batch, rows = started_batch(charlie, 24)
    proc = first_run(batch)
    try:
        wait_for(lambda: answered(batch) >= 3, timeout=120, what="three answered lines before the kill")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    dead = Job.objects.get(pk=batch.job.pk)
    before = set(batch.lines.filter(status=LineStatus.SUCCEEDED).values_list("custom_id", "request_id"))
    assert dead.status == "running" and 3 <= len(before) < 24
    with override_settings(TAUON_JOB_HEARTBEAT_S=1):  # it watches 3 s for a beat of the dead run: none comes
        run_job(dead.pk)  # the requeued message: it takes the job over and resumes the batch
    job = Job.objects.get(pk=dead.pk)
    assert job.status == "succeeded" and job.lease != dead.lease and job.deliveries == 2
    assert any("died; running it again" in line for line in job.log)
    assert_every_line_once(batch, rows)
    out = [json.loads(line) for line in BatchFile.objects.get(pk=batch.output_file_id).path.read_text().splitlines()]
    assert before <= {(o["custom_id"], o["response"]["request_id"]) for o in out}  # not answered again
