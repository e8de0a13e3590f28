"""Explain jobs cannot starve serving (workers/explain.py, engine/pacer.py): a per-user cap on explain jobs
queued or running, attribution that lets the replica's engine go first and sees a cancel between chunks,
and a cancelled job that is still queued never starting. Real serving worker, real web server."""

from __future__ import annotations

import time

import httpx
import pytest
from django.utils import timezone

from console.accounts.models import ApiKey
from console.jobs.models import Job
from tests.conftest import key_client, make_user, wait_for
from tests.serving_rows import deploy

pytestmark = pytest.mark.django_db(transaction=True)
LONG = {"prompt": "word " * 100, "output": list(range(2000, 2008)), "method": "shapley", "samples": 64}  # minutes


def start(api, **body) -> int:  # type: ignore[no-untyped-def]
    res = api.post("/api/deployments/slow/explain", {**LONG, **body}, format="json")
    assert res.status_code == 202, res.json()
    return res.json()["job"]


def attributing(job_id: int) -> Job:
    """Until the job is past its estimate and into its forward passes (progress reported beyond 5 %)."""
    return wait_for(lambda: (j := Job.objects.get(pk=job_id)).status == "running" and j.progress > 0.05 and j,
                    timeout=60, what=f"explain job #{job_id} to be attributing")


def cancel_all(api, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    for job_id in ids:
        api.post(f"/api/deployments/slow/explain/{job_id}/cancel")
    for job_id in ids:
        wait_for(lambda j=job_id: Job.objects.get(pk=j).is_terminal, timeout=30, what=f"job #{job_id} to end")


def test_a_third_explain_job_of_one_user_is_refused_with_429_and_leaves_no_row(serving, user_api, bob,
                                                                               slow_llama_dir):
    deploy("slow", slow_llama_dir, owner=bob)
    other = key_client(make_user("erin", "user"))
    ids = [start(user_api), start(user_api)]
    try:
        res = user_api.post("/api/deployments/slow/explain", LONG, format="json")
        assert res.status_code == 429 and res.json()["error"]["code"] == "too_many_jobs"
        assert "at once (2)" in res.json()["error"]["message"] and int(res["Retry-After"]) >= 1
        assert Job.objects.filter(kind="explain").count() == 2  # no row for the refused one
        ids.append(start(other))  # the cap is per user
    finally:
        cancel_all(user_api, ids[:2])
        cancel_all(other, ids[2:])
    assert start(user_api, samples=1, prompt="hi") > 0  # cancelled jobs free their places at once


def test_a_cancel_mid_attribution_ends_the_job_within_two_seconds(serving, user_api, bob, slow_llama_dir):
    deploy("slow", slow_llama_dir, owner=bob)
    job_id = start(user_api)
    attributing(job_id)
    asked = timezone.now()
    res = user_api.post(f"/api/deployments/slow/explain/{job_id}/cancel")
    assert res.status_code == 202
    job = wait_for(lambda: (j := Job.objects.get(pk=job_id)).is_terminal and j, timeout=10, interval=0.05,
                   what="the job to end")
    assert job.status == "cancelled"
    assert (job.finished_at - asked).total_seconds() < 2.0, job.finished_at - asked


def test_a_cancelled_job_still_queued_never_starts_its_work(charlie):
    from workers.tasks import run_job

    job = Job.enqueue("explain", {"deployment": "pg-nowhere", "task": "text-generation", "prompt": "hi"}, charlie)
    assert job.request_cancel(actor=charlie)
    run_job(job.pk)  # its delivery arrives after the cancel: the task body runs here, in this process
    job.refresh_from_db()
    assert (job.status, job.started_at, job.worker, job.progress) == ("cancelled", None, "", 0.0)
    from workers.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("deploy.pg-nowhere")


def test_another_users_completion_finishes_while_explain_jobs_run(serving, web_server, user_api, bob,
                                                                  slow_llama_dir):
    deploy("slow", slow_llama_dir, owner=bob)
    ids = [start(user_api), start(user_api)]
    try:
        for job_id in ids:
            attributing(job_id)
        _, raw = ApiKey.issue(make_user("erin", "user"), "erin")
        began = time.monotonic()
        reply = httpx.post(f"{web_server.url}/v1/completions", headers={"Authorization": f"Bearer {raw}"},
                           json={"model": "slow", "prompt": "Hello there", "max_tokens": 10, "ignore_eos": True},
                           timeout=120)
        took = time.monotonic() - began
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 10
        assert all(Job.objects.get(pk=j).status == "running" for j in ids), took  # they ran alongside it
    finally:
        cancel_all(user_api, ids)
