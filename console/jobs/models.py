"""The one Job model every background task uses.

State changes are methods guarded by conditional updates, so a redelivered Celery task
or two racing workers can never run or finish a job twice.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from console.accounts.models import User
from console.audit.models import record
from console.jobs import kinds
from console.jobs.choices import ACTIVE, TERMINAL, JobStatus
from workers.celery import app as celery_app

MAX_LOG_LINES = 2000
MAX_DELIVERIES = 3
MAX_SERIES_POINTS = 1000  # per series; past it every other point is dropped (the curve keeps its shape)
SERIES_FLUSH_S = 2.0  # a running job writes new series points at most this often (and when it ends)
# The worker's task that runs every job (workers/tasks.py), sent by name through the Celery app: the console
# depends on the transport only, never on the job bodies (which import this module).
RUN_JOB = "workers.tasks.run_job"

Point = tuple[float, float]


class JobCancelled(Exception):
    """Raised inside a running job when a user asked to cancel it."""


class TooManyJobs(Exception):
    """The user already has as many jobs of this kind queued or running as they may."""


class JobTimedOut(Exception):
    """Raised inside a running job that ran past its kind's soft time limit."""


class LeaseLost(Exception):
    """Raised inside a running job whose lease another delivery took over (its heartbeats had stopped for
    longer than the lease): this run must stop at once and leave the job to the one that holds it now."""


def _new_lease() -> str:
    return uuid.uuid4().hex


class JobQuerySet(models.QuerySet["Job"]):
    def visible_to(self, user: Any) -> JobQuerySet:
        """Maintainers see every job; others see their own and those of kinds that are not private."""
        if user.has_role("maintainer"):
            return self
        return self.filter(~models.Q(kind__in=kinds.private_kinds()) | models.Q(created_by=user))


class Job(models.Model):
    kind = models.CharField(max_length=32, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)  # 0..1
    progress_message = models.CharField(max_length=200, blank=True)
    log = models.JSONField(default=list, blank=True)  # ["2026-11-29T06:00:00Z message", ...]
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # Which run holds the job: set by the delivery that claims (or takes over) it. The holder renews it with
    # its heartbeat; a lease whose heartbeat is older than TAUON_JOB_STALE_S has expired (its run died).
    lease = models.CharField(max_length=32, blank=True)
    deliveries = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    # Live figures while it runs, e.g. {"train_loss": [[step, loss], ...], "eval_loss": [[0, before], [n, after]]}
    series = models.JSONField(default=dict, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (running jobs past 1 % only)."""
        if self.status != JobStatus.RUNNING or not self.started_at or self.progress < 0.01:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return max(0.0, elapsed * (1 - self.progress) / self.progress)

    def rerun(self, actor: Any) -> Job:
        """A new job of the same kind with the same parameters (validated again), audited."""
        spec = kinds.get(self.kind)
        params = spec.validate(self.params, actor) if spec.validate else self.params
        with transaction.atomic():
            job = Job.enqueue(self.kind, params, actor)
            record(actor, "job.rerun", job, kind=self.kind, params=params, rerun_of=self.pk)
        return job

    @classmethod
    def start(cls, kind: str, params: dict[str, Any], user: Any, *, checked: bool = False, cap: int = 0) -> Job:
        """How a user starts a job, through POST /api/jobs/ or a console form: the kind's own validate
        function cleans `params` (its ValidationError propagates; `checked`: the caller already ran it),
        then the job is enqueued and audited as `job.create`, together. `cap`: see enqueue_capped (TooManyJobs)."""
        spec = kinds.get(kind)
        if spec.validate is not None and not checked:
            params = spec.validate(params, user)
        with transaction.atomic():
            job = cls.enqueue_capped(kind, params, user, cap)
            record(user, "job.create", job, kind=kind, params=params)
        return job

    @classmethod
    def enqueue_capped(cls, kind: str, params: dict[str, Any], user: Any, cap: int) -> Job:
        """Enqueue unless `user` already has `cap` jobs of this kind queued or running (0: no cap); raises
        TooManyJobs then, and no row is made. The user's row is locked while counting, so two requests
        at once cannot both take the last place."""
        with transaction.atomic():
            if cap:
                User.objects.select_for_update().filter(pk=user.pk).first()
                active = cls.objects.filter(kind=kind, created_by=user, status__in=ACTIVE).count()
                if active >= cap:
                    raise TooManyJobs(f"You have {active} {kind} job(s) queued or running, the most one user may "
                                      f"have at once ({cap}); wait for one to finish or cancel one, then retry.")
            return cls.enqueue(kind, params, user)

    @classmethod
    def enqueue(cls, kind: str, params: dict[str, Any], user: Any = None) -> Job:
        """Create a queued job and send it to a worker once the surrounding transaction commits."""
        kinds.get(kind)  # an unknown kind fails here, before any row exists
        job = cls.objects.create(kind=kind, params=params, created_by=user if getattr(user, "is_authenticated", False) else None)
        transaction.on_commit(job._send)
        return job

    def _send(self) -> None:
        """A message for a worker to run this job."""
        spec = kinds.get(self.kind)
        limits = {name: value for name in ("soft_time_limit", "time_limit") if (value := getattr(spec, name)) is not None}
        celery_app.send_task(RUN_JOB, args=[self.pk], queue=kinds.queue_for(self.kind, self.params), **limits)

    # --- claiming and finishing -------------------------------------------------------------
    def claim(self, worker: str) -> bool:
        """queued → running, atomically. False if another delivery already took it."""
        now = timezone.now()
        Job.objects.filter(pk=self.pk).update(deliveries=models.F("deliveries") + 1)
        claimed = Job.objects.filter(pk=self.pk, status=JobStatus.QUEUED, cancel_requested=False).update(
            status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, worker=worker[:200], lease=_new_lease()
        )
        self.refresh_from_db()
        return bool(claimed)

    def holder_alive(self, watch_s: float) -> bool:
        """A redelivery found this job running: is the run that holds it alive? Its lease expired (no beat
        within TAUON_JOB_STALE_S): no. Else its heartbeat is watched for up to `watch_s` (a live run beats every
        TAUON_JOB_HEARTBEAT_S, and at each progress report): yes at the first beat, or when the job ends; no if
        it stayed silent (its worker died a moment ago, e.g. a prefork child killed and its message requeued)."""
        seen = self.heartbeat_at
        if seen is None or (timezone.now() - seen).total_seconds() >= settings.TAUON_JOB_STALE_S:
            return False
        deadline = time.monotonic() + watch_s
        while time.monotonic() < deadline:
            time.sleep(0.2)
            row = Job.objects.filter(pk=self.pk).values("status", "heartbeat_at").first()
            if row is None or row["status"] != JobStatus.RUNNING or row["heartbeat_at"] != seen:
                return True
        return False

    def restart(self, worker: str) -> bool:
        """Take over a job whose run died (holder_alive said no): run it again here under a new lease. Only
        if nothing beat since this row was read, and only one redelivery can win (the delivery count must be
        unchanged), so a message redelivered while its job still runs never starts a second run."""
        now = timezone.now()
        line = f"{now:%Y-%m-%dT%H:%M:%SZ} The worker running this job died; running it again " \
               f"(delivery {self.deliveries} of at most {MAX_DELIVERIES})."
        restarted = Job.objects.filter(pk=self.pk, status=JobStatus.RUNNING, deliveries=self.deliveries,
                                       cancel_requested=False, heartbeat_at=self.heartbeat_at).update(
            started_at=now, heartbeat_at=now, worker=worker[:200], lease=_new_lease(), progress=0.0,
            progress_message="Restarted",
            log=(self.log + [line])[-MAX_LOG_LINES:])
        self.refresh_from_db()
        return bool(restarted)

    def _finish(self, status: str, **fields: Any) -> bool:
        now = timezone.now()
        if getattr(self, "_series_dirty", False):  # points reported since the last write
            fields["series"] = self.series
        # a run whose lease was taken over cannot end the job its successor runs
        done = Job.objects.filter(pk=self.pk, status__in=ACTIVE, lease=self.lease).update(
            status=status, finished_at=now, **fields)
        self.refresh_from_db()
        return bool(done)

    def succeed(self, result: Any = None) -> bool:
        return self._finish(JobStatus.SUCCEEDED, result=result, progress=1.0, progress_message="Done")

    def fail(self, error: str) -> bool:
        return self._finish(JobStatus.FAILED, error=error[:10000])

    def mark_cancelled(self, message: str = "Cancelled") -> bool:
        return self._finish(JobStatus.CANCELLED, progress_message=message[:200])

    def request_cancel(self, actor: Any = None) -> bool:
        """Cancel a queued job at once; ask a running one to stop at its next progress report.

        Returns False when the job had already finished. With `actor` the cancel is audited."""
        with transaction.atomic():
            before = self.status
            queued = done = Job.objects.filter(pk=self.pk, status=JobStatus.QUEUED).update(
                status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now(),
                progress_message="Cancelled before it started" if not self.deliveries else "Cancelled")
            if not done:
                done = Job.objects.filter(pk=self.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
            self.refresh_from_db()
            if done and actor is not None:
                record(actor, "job.cancel", self, kind=self.kind, status_before=before, status_after=self.status)
        if queued and self.deliveries:  # it ran before (the reaper queued it again): clean up what that run left
            kinds.on_failed(self)
        return bool(done)

    # --- while running ----------------------------------------------------------------------
    def report(self, fraction: float | None = None, message: str | None = None, log: str | None = None,
               series: dict[str, Point | list[Point]] | None = None, flush: bool = False,
               cancellable: bool = True) -> None:
        """Record progress (and optionally a log line, and points of live series); raise JobCancelled if
        cancel was asked (unless not `cancellable`: past a job's point of no return). Series points are written at most every SERIES_FLUSH_S seconds unless `flush`
        (and at the job's end), so reporting a point every step costs no extra write per step."""
        now = timezone.now()
        fields: dict[str, Any] = {"heartbeat_at": now}
        if fraction is not None:
            fields["progress"] = max(0.0, min(1.0, float(fraction)))
        if message is not None:
            fields["progress_message"] = message[:200]
        if log is not None:
            self.log = (self.log + [f"{now:%Y-%m-%dT%H:%M:%SZ} {log}"])[-MAX_LOG_LINES:]
            fields["log"] = self.log
        if series:
            self._add_points(series)
        last = getattr(self, "_series_written", None)
        if getattr(self, "_series_dirty", False) and (flush or last is None or (now - last).total_seconds() >= SERIES_FLUSH_S):
            fields["series"] = self.series
            self._series_written, self._series_dirty = now, False
        if not Job.objects.filter(pk=self.pk, status=JobStatus.RUNNING, lease=self.lease).update(**fields):
            self._check_lease()
        for name, value in fields.items():
            setattr(self, name, value)
        if not cancellable:
            return
        if Job.objects.filter(pk=self.pk, cancel_requested=True).exists():
            raise JobCancelled()
        limit = self._limit("soft_time_limit")
        if limit and self.started_at and (now - self.started_at).total_seconds() > limit:
            raise JobTimedOut(f"The job ran past its soft time limit of {limit} s.")

    def _add_points(self, series: dict[str, Point | list[Point]]) -> None:
        """Append (x, y) points. A point at or before a series' last x replaces the tail from there on:
        a job resumed from a checkpoint continues its curve instead of doubling back."""
        merged = dict(self.series or {})
        for name, points in series.items():
            points = [points] if isinstance(points, tuple) else points
            line = list(merged.get(name, []))
            for x, y in points:
                if line and line[-1][0] >= x:
                    line = [p for p in line if p[0] < x]
                line.append([x, None if y is None or y != y else float(y)])  # NaN → null (JSON has none)
            while len(line) > MAX_SERIES_POINTS:
                line = line[:-1:2] + line[-1:]
            merged[name] = line
        self.series = merged
        self._series_dirty = True

    def _limit(self, name: str) -> int | None:
        spec = kinds.KINDS.get(self.kind)
        return getattr(spec, name) if spec else None

    def beat(self) -> bool:
        """Renew this run's lease; False when it no longer holds the job (it ended, or another run took it)."""
        return bool(Job.objects.filter(pk=self.pk, status=JobStatus.RUNNING, lease=self.lease).update(
            heartbeat_at=timezone.now()))

    def _check_lease(self) -> None:
        """Raise LeaseLost if the job still runs, but under another run's lease."""
        holder = Job.objects.filter(pk=self.pk, status=JobStatus.RUNNING).values_list("lease", flat=True).first()
        if holder is not None and holder != self.lease:
            raise LeaseLost(f"{self} was taken over by another delivery; this run stops.")

    # --- the reaper ---------------------------------------------------------------------------
    def _requeue(self, cutoff: Any, older_than_s: int) -> bool:
        """A resumable kind whose run's lease expired goes back to the queue (its next run carries on where the
        dead one stopped), while it has deliveries left and no cancel is pending. The dead run's own message, if
        the broker hands it out again later, then finds the new run's lease alive, or the job ended."""
        spec = kinds.KINDS.get(self.kind)
        if spec is None or not spec.resumable or self.deliveries >= MAX_DELIVERIES or self.cancel_requested:
            return False
        now = timezone.now()
        line = (f"{now:%Y-%m-%dT%H:%M:%SZ} The worker running this job ({self.worker or 'unknown'}) stopped "
                f"responding for over {older_than_s}s; queued again to carry on where it stopped "
                f"(delivery {self.deliveries + 1} of at most {MAX_DELIVERIES}).")
        with transaction.atomic():
            queued = Job.objects.filter(pk=self.pk, status=JobStatus.RUNNING, lease=self.lease, cancel_requested=False,
                                        heartbeat_at__lt=cutoff).update(
                status=JobStatus.QUEUED, lease="", worker="", started_at=None, progress_message="Queued again",
                log=(self.log + [line])[-MAX_LOG_LINES:])
            if queued:
                transaction.on_commit(self._send)
        self.refresh_from_db()
        return bool(queued)

    @classmethod
    def reap_stale(cls, older_than_s: int | None = None) -> list[int]:
        """Fail running jobs whose worker stopped heartbeating (it died or was killed); resumable kinds go back
        to the queue instead, while they have deliveries left. Returns the jobs failed or queued again."""
        older_than_s = older_than_s if older_than_s is not None else settings.TAUON_JOB_STALE_S
        cutoff = timezone.now() - timedelta(seconds=older_than_s)
        reaped = []
        for job in cls.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff):
            if job._requeue(cutoff, older_than_s):
                reaped.append(job.pk)
                continue
            if job.fail(f"The worker running this job ({job.worker or 'unknown'}) stopped responding "
                        f"for over {older_than_s}s and is presumed dead."):
                reaped.append(job.pk)
                kinds.on_failed(job)
        # A thread-pool worker cannot kill a task: fail what runs past its kind's hard limit (+1 min).
        now = timezone.now()
        for job in cls.objects.filter(status=JobStatus.RUNNING, started_at__isnull=False):
            limit = job._limit("time_limit")
            if limit and (now - job.started_at).total_seconds() > limit + 60 and \
                    job.fail(f"The job ran past its hard time limit of {limit} s."):
                reaped.append(job.pk)
                kinds.on_failed(job)
        return reaped
