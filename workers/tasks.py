"""Celery tasks. Thin: they take ids, re-fetch rows, and hand the work to a job handler."""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from django.conf import settings
from django.db import connection

from console.deployments.models import Replica
from console.jobs import kinds
from console.jobs.choices import JobStatus
from console.jobs.models import MAX_DELIVERIES, RUN_JOB, Job, JobCancelled, LeaseLost

log = logging.getLogger(__name__)


class _Heartbeat(threading.Thread):
    """Touches job.heartbeat_at while the handler runs, so the reaper can tell a dead worker."""

    def __init__(self, job: Job):
        super().__init__(daemon=True, name=f"job-{job.pk}-heartbeat")
        self.job, self.stopped = job, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.TAUON_JOB_HEARTBEAT_S):
                self.job.beat()
        finally:
            connection.close()


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        log.warning("job %s vanished before it ran", job_id)
        return
    worker = self.request.hostname or "worker"
    if not job.claim(worker=worker):
        if job.status != JobStatus.RUNNING or job.deliveries <= 1:
            return
        if job.holder_alive(watch_s=2 * settings.TAUON_JOB_HEARTBEAT_S + 1):
            # Redelivered while its run still beats (a job longer than the broker's visibility timeout): that
            # run holds the lease and goes on; this delivery leaves without touching the job.
            log.warning("job %s is still running on %s (it beats); redelivery %s leaves it", job.pk,
                        job.worker or "another worker", job.deliveries)
            return
        # Redelivered while marked running and its run silent: the worker that had it died mid-job.
        # Idempotent kinds run again, up to MAX_DELIVERIES deliveries in all; the others fail at once.
        spec = kinds.KINDS.get(job.kind)
        if spec is not None and spec.retry_on_worker_lost and job.deliveries <= MAX_DELIVERIES:
            if not job.restart(worker):  # another delivery won, or a cancel came in meanwhile
                if job.cancel_requested and job.mark_cancelled():
                    kinds.on_failed(job)
                return
        else:
            why = (f"{job.deliveries - 1} times; gave up after {MAX_DELIVERIES} deliveries"
                   if spec is not None and spec.retry_on_worker_lost
                   else f"(delivery {job.deliveries} of at most {MAX_DELIVERIES})")
            if job.fail(f"The worker running this job died {why}."):
                kinds.on_failed(job)
            return
    beat = _Heartbeat(job)
    beat.start()
    try:
        result = kinds.handler_for(job.kind)(job)
    except LeaseLost:
        log.warning("job %s was taken over by another delivery; this run stopped", job.pk)
    except JobCancelled:
        if job.mark_cancelled():
            kinds.on_failed(job)
    except Exception as exc:
        log.exception("job %s (%s) failed", job.pk, job.kind)
        if job.fail(f"{exc.__class__.__name__}: {exc}"):
            kinds.on_failed(job)
    else:
        job.succeed(result)
    finally:
        beat.stopped.set()


@shared_task(ignore_result=True)
def reap_stale_jobs() -> list[int]:
    """Beat-driven housekeeping: fail jobs whose worker died; forget replicas gone for an hour."""
    Replica.prune()
    return Job.reap_stale()
