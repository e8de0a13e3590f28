"""The `batch` job: validate a batch's lines, feed them to their deployments' replicas through the same
gateway as /v1 (workers/feeding.py: this batch's fair share of the deployment's seats in flight, at the
engine's background priority, so interactive requests go first), record each answer once, then write the
output and error files.

Resumable: each answer is recorded on its line with a conditional update, and a run sends only lines
still pending, so a redelivered job (its worker died) carries on where the last one stopped; a line in
flight when the worker died is sent again, and recorded once. A cancel or the batch's expiry is seen
within feeding.CHECK_S; the answered lines are kept."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from console.batches.choices import BatchStatus, LineStatus
from console.batches.models import Batch, BatchLine
from console.inference import formats
from console.inference.errors import ApiError
from console.inference.gateway import Call
from workers.feeding import BUSY, Share, feed

log = logging.getLogger(__name__)
TIMEOUT_TRIES = 3  # a line that timed out this often is answered with its 504


def run(job: Any) -> dict[str, Any]:
    batch = Batch.objects.get(pk=job.params["batch"])
    batch.validate()
    reason = batch.stop_reason() if batch.is_active else None
    if reason is None and batch.status == BatchStatus.IN_PROGRESS:
        reason = asyncio.run(_Feeder(batch, job).run())
    batch.refresh_from_db()
    if batch.is_active:  # (a redelivery may find it finalizing: it writes the files again)
        batch.finish(batch.final_status(reason))
    batch.refresh_from_db()
    counts = batch.counts()
    job.report(1.0, f"{batch.status}: {counts['completed']} answered, {counts['failed']} failed",
               cancellable=False)
    return {"batch": batch.id, "status": batch.status, **counts}


class _Feeder:
    def __init__(self, batch: Batch, job: Any):
        self.batch, self.job = batch, job
        self.window = max(1, int(settings.TAUON_BATCH_CONCURRENCY))  # narrowed to a share of the seats in run()
        self.share: Share | None = None
        self.chat = batch.endpoint == "/v1/chat/completions"
        self._deployments: dict[str, tuple[float, Any]] = {}
        self.timeouts: dict[int, int] = {}

    def _pending(self) -> list[BatchLine]:
        return list(self.batch.lines.filter(status=LineStatus.PENDING).order_by("index"))

    def _report(self) -> None:
        counts = self.batch.counts()
        done = counts["completed"] + counts["failed"]
        self.job.report(done / max(1, counts["total"]), f"{done} of {counts['total']} lines answered",
                        cancellable=False)

    def _check(self) -> str | None:
        reason = self.batch.stop_reason()
        if reason is None:
            self._report()
            if self.share is not None:
                self.window = self.share.refresh()
        return reason

    async def _record(self, line: BatchLine, outcome: tuple[int, dict[str, Any], str]) -> None:
        await sync_to_async(line.record)(*outcome)

    async def run(self) -> str | None:
        """None once every line is answered; else why it stopped (cancelled, expired)."""
        pending = await sync_to_async(self._pending)()
        if pending:  # fill the engine's seats, not its queue: the queue's places stay for interactive requests
            deployment = await self._deployment(pending[0].request["deployment"])
            if deployment is not None:
                seats = int(deployment.config["engine"]["max_num_seqs"]) * max(1, deployment.replicas)
                self.share = Share(deployment.name, self.batch.owner_id, f"batch-{self.batch.id}",
                                   min(self.window, seats))
        try:
            return await feed(pending, self._answer, self._record, sync_to_async(self._check),
                              lambda: self.window)
        finally:
            if self.share is not None:
                await sync_to_async(self.share.leave)()
            await sync_to_async(self._report)()

    async def _deployment(self, name: str) -> Any:
        from console.deployments.models import Deployment

        seen = self._deployments.get(name)
        if seen is None or time.monotonic() - seen[0] > 5:
            row = await Deployment.objects.filter(name=name).afirst()
            seen = self._deployments[name] = (time.monotonic(), row)
        return seen[1]

    async def _answer(self, line: BatchLine) -> tuple[int, dict[str, Any], str] | None:
        """(status, body, request id) of one line; None: send it again later."""
        request = line.request or {}
        deployment = await self._deployment(request["deployment"])
        if deployment is None:
            error = ApiError(404, f"The model '{request['deployment']}' was deleted while the batch ran.",
                             param="model", code="model_not_found")
            return error.status, error.body(), ""
        if deployment.stopped:
            return None  # it may be started again before the batch expires
        call = Call(deployment.name, deployment.queue, deployment.config, request["work"])
        try:
            await call.open()
            if request["work"]["kind"] == "embed":
                done = await call.done()
                return 200, formats.embeddings_body(deployment.name, done["embeddings"],
                                                    int(done["usage"]["prompt_tokens"]),
                                                    request["work"]["encoding_format"]), call.request_id
            accepted = await call.first()
            builder = formats.Builder(call.request_id, deployment.name, chat=self.chat, n=request["n"],
                                      version=accepted.get("version"), token_ids=request["token_ids"])
            async for event in call.events():
                builder.on_event(event, request["logprobs"])
            return 200, builder.body(request["logprobs"]), call.request_id
        except ApiError as exc:
            if exc.status in BUSY:
                return None
            if exc.status == 504:
                self.timeouts[line.pk] = self.timeouts.get(line.pk, 0) + 1
                if self.timeouts[line.pk] < TIMEOUT_TRIES:
                    return None
            return exc.status, exc.body(), call.request_id
        finally:
            await call.close()
