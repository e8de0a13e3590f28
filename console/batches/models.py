"""Batch files, batches and their lines. State changes are methods here, guarded by conditional
updates: a line's answer is recorded once (`BatchLine.record`), so a job run twice answers nothing twice."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from console.batches import lines
from console.batches.choices import (
    ACTIVE,
    COMPLETION_WINDOWS,
    ENDPOINTS,
    BatchStatus,
    FilePurpose,
    LineStatus,
)
from console.inference.errors import ApiError, invalid


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def _file_id() -> str:
    return _new_id("file-")


def _batch_id() -> str:
    return _new_id("batch_")


def _stamp(when: Any) -> int | None:
    return int(when.timestamp()) if when else None


class OwnedQuerySet(models.QuerySet):
    def visible_to(self, user: Any) -> OwnedQuerySet:
        """Admins see everyone's; others their own."""
        return self if user.has_role("admin") else self.filter(owner=user)


def _storage() -> Path:
    folder = Path(settings.TAUON_STORAGE) / "batches"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class BatchFile(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=_file_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batch_files")
    purpose = models.CharField(max_length=16, choices=FilePurpose.choices)
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField(default=0)
    lines = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.id})"

    @property
    def path(self) -> Path:
        return _storage() / f"{self.id}.jsonl"  # a generated name: a client never chooses a server path

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": _stamp(self.created_at),
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None}

    @classmethod
    def upload(cls, owner: Any, filename: str, purpose: str, chunks: Iterable[bytes], size: int) -> BatchFile:
        """A batch input file: checked whole (JSONL, caps) before its row exists; audited."""
        from console.audit.models import record

        if purpose != FilePurpose.BATCH:
            raise invalid(f"'purpose' must be \"batch\" (the only purpose this server keeps files for), "
                          f"got {purpose!r}.", "purpose")
        cap = settings.TAUON_BATCH_MAX_FILE_BYTES
        if size > cap:
            raise ApiError(413, f"The file is {size} bytes, above the cap of {cap} bytes per batch file; split it.",
                           param="file", code="file_too_large")
        row = cls(owner=owner, purpose=purpose, filename=(filename or "batch.jsonl")[:255])
        fd, tmp = tempfile.mkstemp(dir=_storage(), suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            with open(tmp, "rb") as fh:
                shape = lines.check_file(fh, settings.TAUON_BATCH_MAX_LINES)
            row.bytes, row.lines = os.path.getsize(tmp), shape.lines
            with transaction.atomic():
                row.save()
                record(owner, "batch_file.upload", row, filename=row.filename, bytes=row.bytes, lines=row.lines)
                os.replace(tmp, row.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return row

    @classmethod
    def output(cls, owner: Any, filename: str, rows: Iterable[dict[str, Any]]) -> BatchFile | None:
        """An output or error file of a batch (None when it would be empty)."""
        row = cls(owner=owner, purpose=FilePurpose.BATCH_OUTPUT, filename=filename)
        count = 0
        tmp = row.path.with_suffix(".part")
        with open(tmp, "w", encoding="utf-8") as out:
            for item in rows:
                out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
                count += 1
        if not count:
            tmp.unlink()
            return None
        row.bytes, row.lines = tmp.stat().st_size, count
        os.replace(tmp, row.path)
        row.save()
        return row

    def remove(self, actor: Any) -> None:
        from console.audit.models import record

        if Batch.objects.filter(input_file_id=self.id, status__in=ACTIVE).exists():
            raise invalid(f"File {self.id} is the input of a batch still running; cancel the batch first.", "file_id",
                          code="file_in_use")
        with transaction.atomic():
            record(actor, "batch_file.delete", self, filename=self.filename)
            self.delete()
        self.path.unlink(missing_ok=True)


class Batch(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=_batch_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    endpoint = models.CharField(max_length=32)
    input_file_id = models.CharField(max_length=40)
    output_file_id = models.CharField(max_length=40, blank=True)
    error_file_id = models.CharField(max_length=40, blank=True)
    completion_window = models.CharField(max_length=8, default="24h")
    status = models.CharField(max_length=16, choices=BatchStatus.choices, default=BatchStatus.VALIDATING,
                              db_index=True)
    errors = models.JSONField(null=True, blank=True)  # why the whole batch failed, OpenAI's {"data": [...]}
    metadata = models.JSONField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    job = models.OneToOneField("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="batch")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    expires_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return self.id

    # --- reading ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        done = dict(self.lines.exclude(status=LineStatus.PENDING).values_list("status").annotate(n=models.Count("id")))
        return {"total": self.total, "completed": done.get(LineStatus.SUCCEEDED, 0),
                "failed": done.get(LineStatus.FAILED, 0)}

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": self.errors,
                "input_file_id": self.input_file_id, "completion_window": self.completion_window,
                "status": self.status, "output_file_id": self.output_file_id or None,
                "error_file_id": self.error_file_id or None,
                **{f"{name}_at": _stamp(getattr(self, f"{name}_at")) for name in (
                    "created", "in_progress", "expires", "finalizing", "completed", "failed", "expired",
                    "cancelling", "cancelled")},
                "request_counts": self.counts(), "metadata": self.metadata}

    # --- starting -----------------------------------------------------------------------------
    @classmethod
    def start(cls, owner: Any, input_file_id: Any, endpoint: Any, completion_window: Any,
              metadata: Any = None) -> Batch:
        """Check the request, create the batch (validating) and enqueue its job, audited, together."""
        from console.accounts.models import User
        from console.audit.models import record
        from console.jobs.models import Job

        if endpoint not in ENDPOINTS:
            raise invalid(f"'endpoint' must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}.", "endpoint")
        if completion_window not in COMPLETION_WINDOWS:
            raise invalid(f"'completion_window' must be \"24h\", got {completion_window!r}.", "completion_window")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or not all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items())):
            raise invalid("'metadata' must be an object of at most 16 string keys (64 characters) and string "
                          "values (512 characters).", "metadata")
        source = BatchFile.objects.filter(pk=input_file_id if isinstance(input_file_id, str) else "",
                                          owner=owner).first()
        if source is None:
            raise ApiError(404, f"No file {input_file_id!r} of yours; upload one with purpose \"batch\" first.",
                           param="input_file_id", code="file_not_found")
        if source.purpose != FilePurpose.BATCH:
            raise invalid(f"File {source.id} has purpose {source.purpose!r}; a batch reads a file uploaded with "
                          "purpose \"batch\".", "input_file_id")
        cap = settings.TAUON_BATCH_MAX_ACTIVE_PER_USER
        with transaction.atomic():
            User.objects.select_for_update().filter(pk=owner.pk).first()  # two creates at once count each other
            active = cls.objects.filter(owner=owner, status__in=ACTIVE).count()
            if cap and active >= cap:
                raise ApiError(429, f"You have {active} batches running, the most one user may have at once "
                                    f"({cap}); wait for one to finish or cancel one.", code="too_many_batches",
                               retry_after=60)
            now = timezone.now()
            batch = cls.objects.create(owner=owner, endpoint=endpoint, input_file_id=source.id,
                                       completion_window=completion_window, metadata=metadata,
                                       total=source.lines,
                                       expires_at=now + timedelta(seconds=COMPLETION_WINDOWS[completion_window]))
            batch.job = Job.enqueue("batch", {"batch": batch.id}, owner)
            batch.save(update_fields=["job"])
            record(owner, "batch.create", batch, endpoint=endpoint, input_file_id=source.id, lines=source.lines)
        return batch

    def _move(self, before: tuple[str, ...], after: str, **fields: Any) -> bool:
        now = timezone.now()
        stamp = {"in_progress": "in_progress_at", "finalizing": "finalizing_at", "completed": "completed_at",
                 "failed": "failed_at", "expired": "expired_at", "cancelling": "cancelling_at",
                 "cancelled": "cancelled_at"}[after]
        moved = Batch.objects.filter(pk=self.pk, status__in=before).update(status=after, **{stamp: now}, **fields)
        self.refresh_from_db()
        return bool(moved)

    # --- in the job ---------------------------------------------------------------------------
    def validate(self) -> None:
        """validating → in_progress: every input line becomes a BatchLine, pending or failed with why.
        Idempotent: a redelivered job finds the lines already there."""
        from console.deployments.models import Deployment

        if self.status != BatchStatus.VALIDATING:
            return
        source = BatchFile.objects.filter(pk=self.input_file_id).first()
        if source is None or not source.path.exists():
            self.finish(BatchStatus.FAILED, errors={"object": "list", "data": [
                {"code": "file_not_found", "message": f"The input file {self.input_file_id} was deleted.",
                 "param": "input_file_id", "line": None}]})
            return
        found: dict[str, Any] = {}

        def deployment_for(name: str) -> Any:
            if name not in found:
                found[name] = Deployment.objects.select_related("model").filter(name=name).first()
            return found[name]

        rows = []
        for index, data in lines.read(source.path):
            row = BatchLine(batch=self, index=index, custom_id=data["custom_id"])
            try:
                row.request = lines.check_line(data, self.endpoint, deployment_for)
            except ApiError as exc:
                row.status, row.status_code = LineStatus.FAILED, exc.status
                row.error = {"code": exc.code or "invalid_request", "message": f"Line {index + 1}: {exc.message}",
                             "param": exc.param, "line": index + 1}
                row.answered_at = timezone.now()
            rows.append(row)
        with transaction.atomic():
            BatchLine.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
            self._move((BatchStatus.VALIDATING,), BatchStatus.IN_PROGRESS, total=len(rows))

    def stop_reason(self) -> str | None:
        """Why the job must stop feeding lines now (cancelled, expired, or the status it found), or None."""
        self.refresh_from_db(fields=["status", "cancelling_at"])
        if self.status == BatchStatus.CANCELLING:
            return BatchStatus.CANCELLED
        if self.status != BatchStatus.IN_PROGRESS:
            return str(self.status)
        if timezone.now() >= self.expires_at:
            return BatchStatus.EXPIRED
        return None

    def final_status(self, reason: str | None) -> str:
        if reason in (BatchStatus.CANCELLED, BatchStatus.EXPIRED):
            return reason
        return BatchStatus.CANCELLED if self.cancelling_at else BatchStatus.COMPLETED

    def finish(self, final: str, errors: dict[str, Any] | None = None) -> bool:
        """→ finalizing → `final` (completed, cancelled, expired or failed), writing the output and error
        files of the lines answered so far (for an expired batch, its unanswered lines are errors too)."""
        started = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)
        if not self._move(started, BatchStatus.FINALIZING):
            if self.status != BatchStatus.FINALIZING:
                return False  # already ended
        if final == BatchStatus.EXPIRED:
            self.lines.filter(status=LineStatus.PENDING).update(
                status=LineStatus.FAILED, answered_at=timezone.now(),
                error={"code": "batch_expired", "message": "This line was not answered before the batch expired."})
        answered = self.lines.exclude(status=LineStatus.PENDING).order_by("index")
        out = BatchFile.output(self.owner, f"{self.id}_output.jsonl",
                               (line.output() for line in answered.filter(status=LineStatus.SUCCEEDED).iterator()))
        err = BatchFile.output(self.owner, f"{self.id}_error.jsonl",
                               (line.output() for line in answered.filter(status=LineStatus.FAILED).iterator()))
        return self._move((BatchStatus.FINALIZING,), final, output_file_id=out.id if out else "",
                          error_file_id=err.id if err else "", errors=errors)

    # --- from a user --------------------------------------------------------------------------
    def cancel(self, actor: Any) -> None:
        """in progress → cancelling (the job stops within a second and keeps the answered lines); a batch
        whose job never started is cancelled at once."""
        from console.audit.models import record

        if self.status == BatchStatus.CANCELLING:
            return
        with transaction.atomic():
            if not self._move((BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS), BatchStatus.CANCELLING):
                raise ApiError(409, f"Batch {self.id} is {self.status}; only a running batch can be cancelled.",
                               code="batch_not_cancellable")
            record(actor, "batch.cancel", self)
        if self.job is not None:
            self.job.request_cancel()
            if self.job.status == "cancelled" and self.job.started_at is None:  # it never ran: end it here
                self.finish(BatchStatus.CANCELLED)


class BatchLine(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="lines")
    index = models.PositiveIntegerField()
    custom_id = models.CharField(max_length=lines.CUSTOM_ID_MAX)
    request = models.JSONField(null=True, blank=True)  # lines.check_line's result; None for a bad line
    status = models.CharField(max_length=16, choices=LineStatus.choices, default=LineStatus.PENDING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    response = models.JSONField(null=True, blank=True)  # the endpoint's body (an answer or its error)
    error = models.JSONField(null=True, blank=True)  # a line refused before it ran: {code, message, ...}
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [models.UniqueConstraint(fields=["batch", "custom_id"], name="batch_line_custom_id_unique"),
                       models.UniqueConstraint(fields=["batch", "index"], name="batch_line_index_unique")]
        indexes = [models.Index(fields=["batch", "status"])]

    def record(self, status_code: int, body: dict[str, Any], request_id: str) -> bool:
        """The line's answer, once: False when it was already answered (a duplicate run)."""
        status = LineStatus.SUCCEEDED if status_code == 200 else LineStatus.FAILED
        return bool(BatchLine.objects.filter(pk=self.pk, status=LineStatus.PENDING).update(
            status=status, status_code=status_code, response=body, request_id=request_id[:64],
            answered_at=timezone.now()))

    def output(self) -> dict[str, Any]:
        """OpenAI's output/error file line."""
        response = None
        if self.response is not None:
            response = {"status_code": self.status_code, "request_id": self.request_id, "body": self.response}
        return {"id": f"batch_req_{self.batch_id}_{self.index}", "custom_id": self.custom_id, "response": response,
                "error": self.error}


def fail_with_job(job: Any) -> None:
    """The batch's job failed (its worker died too often, the reaper) or was cancelled: end the batch
    with the lines answered so far."""
    batch = Batch.objects.filter(job=job).first()
    if batch is None or not batch.is_active:
        return
    if batch.status == BatchStatus.CANCELLING or job.status == "cancelled":
        batch.finish(BatchStatus.CANCELLED)
    else:
        batch.finish(BatchStatus.FAILED, errors={"object": "list", "data": [
            {"code": "job_failed", "message": job.error or "The batch's job failed.", "param": None, "line": None}]})
