"""The Job base: atomic claims, progress, cancel, reaping of dead workers, a real worker run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

import tests.job_kinds  # noqa: F401 - registers test-sleep
from console.jobs.models import Job, JobCancelled
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db


def test_a_job_is_claimed_only_once(bob):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    assert job.claim("w1") is True
    assert Job.objects.get(pk=job.pk).claim("w2") is False
    job.refresh_from_db()
    assert job.status == "running" and job.worker == "w1" and job.deliveries == 2


def test_a_finished_job_cannot_be_finished_again(bob):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    job.claim("w1")
    assert job.succeed({"ok": 1}) is True
    assert job.fail("late failure") is False
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result == {"ok": 1} and job.error == ""


def test_cancelling_a_queued_job_ends_it_at_once(bob):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    assert job.request_cancel() is True
    assert job.status == "cancelled"
    assert job.claim("w1") is False


def test_cancelling_a_running_job_stops_it_at_its_next_report(bob):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    job.claim("w1")
    job.report(0.1, "working")
    Job.objects.get(pk=job.pk).request_cancel()
    with pytest.raises(JobCancelled):
        job.report(0.2, "still working")


def test_progress_and_log_lines_are_recorded(bob):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    job.claim("w1")
    job.report(0.5, "half way", log="first line")
    job.refresh_from_db()
    assert job.progress == 0.5 and job.progress_message == "half way"
    assert job.log[-1].endswith("first line")


def test_a_running_job_whose_worker_stopped_heartbeating_is_failed_by_the_reaper(bob):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    job.claim("w1")
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=300))
    fresh = Job.objects.create(kind="test-sleep", created_by=bob)
    fresh.claim("w2")
    assert Job.reap_stale(older_than_s=60) == [job.pk]
    job.refresh_from_db()
    assert job.status == "failed" and "w1" in job.error and "presumed dead" in job.error


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_a_job_to_success(celery_worker, bob):
    job = Job.enqueue("test-sleep", {"steps": 3}, bob)
    done = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).first(), 60, what="job end")
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
    assert done.result == {"steps": 3} and done.progress == 1.0
    assert len(done.log) == 3


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_records_the_error_of_a_failing_job(celery_worker, bob):
    job = Job.enqueue("test-sleep", {"steps": 1, "boom": True}, bob)
    done = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed"]).first(), 60, what="job end")
    assert done.status == "failed" and "boom requested" in done.error
