"""The `predict` job: a registered dataset's texts through a text- or token-classification deployment, in chunks
sent through the same gateway as /api/deployments/{name}/predict by workers/feeding.py, a few at a time (WINDOW
chunks in flight, so the deployment's queue keeps its places for interactive requests; a chunk it has no room
for, 429, or no replica for, 503, is sent again after a pause), at the engine's background priority (the encoder
runs interactive requests' batches first). Progress and the cancel check every feeding.CHECK_S.

Resumable: each answered chunk is kept (console/batches/predict.keep), and a run predicts only the texts no
earlier run of the job answered, so a redelivered job (its worker died) carries on where the last one stopped.
The predictions are written at the end, all at once: a failed or cancelled job leaves no file."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async

from console.batches import predict
from console.batches.lines import BATCH_PRIORITY
from console.inference.errors import ApiError
from console.inference.gateway import Call
from workers.feeding import BUSY, feed

WINDOW = 2  # chunks in flight at once
CHUNK = 32  # texts per request (at most the deployment's max_input_items)
GIVE_UP_S = 600  # no chunk answered for this long (no replica, or never any room): the job fails saying so


def run(job: Any) -> dict[str, Any]:
    from console.deployments.models import Deployment
    from console.evaluation.models import DatasetVersion

    params = job.params
    version = DatasetVersion.objects.select_related("dataset").get(dataset__name=params["dataset"],
                                                                   number=params["version"])
    deployment = Deployment.objects.select_related("model").get(name=params["deployment"])
    items = predict.examples(version.dataset.kind, version.load())
    job.report(0.0, f"0 of {len(items)} texts predicted", log=f"Predicting {len(items)} texts of {version} "
                                                              f"with {deployment.name}")
    outputs = asyncio.run(_Feeder(job, deployment, [text for text, _ in items]).run())
    rows: list[dict[str, Any]] = []
    for i, ((text, expected), output) in enumerate(zip(items, outputs, strict=True)):
        row: dict[str, Any] = {"index": i, "text": text}
        if deployment.model.task == "token-classification":
            row["entities"] = output
        else:
            row.update(label=output[0]["label"], score=output[0]["score"], expected=expected)
        rows.append(row)
    predict.write(job.pk, rows)
    summary = predict.summarize(rows)
    job.report(1.0, f"{len(rows)} texts predicted", cancellable=False)
    return {"deployment": deployment.name, "task": deployment.model.task, "dataset": version.dataset.name,
            "version": version.number, "dataset_kind": version.dataset.kind, **summary}


class _Feeder:
    def __init__(self, job: Any, deployment: Any, texts: list[str]):
        self.job, self.deployment, self.texts = job, deployment, texts
        self.outputs: list[Any] = [None] * len(texts)
        for start, results in predict.kept(job.pk):  # what earlier runs of this job answered
            self.outputs[start:start + len(results)] = results
        self.resumed = self.done = sum(output is not None for output in self.outputs)
        size = max(1, min(CHUNK, int(deployment.config.get("max_input_items", CHUNK))))
        self.chunks: list[tuple[int, list[str]]] = []
        for i, output in enumerate(self.outputs):  # runs of texts not answered yet, `size` at most
            if output is not None:
                continue
            last = self.chunks[-1] if self.chunks else None
            if last is not None and last[0] + len(last[1]) == i and len(last[1]) < size:
                last[1].append(texts[i])
            else:
                self.chunks.append((i, [texts[i]]))

    def _check(self) -> None:
        # raises JobCancelled when a cancel was asked: feed() then stops what is in flight
        self.job.report(self.done / max(1, len(self.texts)), f"{self.done} of {len(self.texts)} texts predicted")

    async def _record(self, chunk: tuple[int, list[str]], results: list[Any]) -> None:
        start, texts = chunk
        await sync_to_async(predict.keep)(self.job.pk, start, results)
        self.outputs[start:start + len(texts)] = results
        self.done += len(texts)

    async def run(self) -> list[Any]:
        if self.resumed:
            await sync_to_async(self.job.report)(log=f"Resuming: {self.resumed} of {len(self.texts)} texts were "
                                                     "predicted by an earlier run; predicting the others")
        await feed(self.chunks, self._send, self._record, sync_to_async(self._check), lambda: WINDOW,
                   give_up_s=GIVE_UP_S,
                   stalled=f"Deployment '{self.deployment.name}' had no ready replica or no room for {GIVE_UP_S} s; "
                           "start it (or add replicas) and run the job again.")
        await sync_to_async(self._check)()
        return self.outputs

    async def _send(self, chunk: tuple[int, list[str]]) -> list[Any]:
        """The chunk's results; a 429/503 (no room now) is sent again by feed(), other errors fail the job."""
        deployment = self.deployment
        call = Call(deployment.name, deployment.queue, deployment.config,
                    {"kind": "predict", "input": chunk[1], "top_k": 1, "priority": BATCH_PRIORITY})
        try:
            await call.open()
            done = await call.done()
            return list(done["results"])
        except ApiError as exc:
            if exc.status in BUSY:
                raise
            raise RuntimeError(f"The deployment refused a chunk ({exc.status} {exc.code}): {exc.message}") from exc
        finally:
            await call.close()
