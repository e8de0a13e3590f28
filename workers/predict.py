"""The `predict` job: a registered dataset's texts through a text- or token-classification deployment, in chunks
sent through the same gateway as /api/deployments/{name}/predict, a few at a time (WINDOW chunks in flight, so the
deployment's queue keeps its places for interactive requests; a chunk it has no room for, 429, or no replica for,
503, is sent again after a pause). Progress after each chunk; a cancel is seen at the next one. The predictions are
written at the end, all at once (console/batches/predict.py): a failed or cancelled job leaves no file."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async

from console.batches import predict
from console.inference.errors import ApiError
from console.inference.gateway import Call, close_redis_client

WINDOW = 2  # chunks in flight at once
CHUNK = 32  # texts per request (at most the deployment's max_input_items)
RETRY_S = 0.5
GIVE_UP_S = 600  # no chunk answered for this long (no replica, or never any room): the job fails saying so
BUSY = (429, 503)


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
        size = max(1, min(CHUNK, int(deployment.config.get("max_input_items", CHUNK))))
        self.chunks = [(start, texts[start:start + size]) for start in range(0, len(texts), size)]

    async def run(self) -> list[Any]:
        outputs: list[Any] = [None] * len(self.texts)
        pending = list(self.chunks)
        tasks: dict[asyncio.Task[list[Any] | None], tuple[int, list[str]]] = {}
        done_texts = 0
        progressed = time.monotonic()
        try:
            while pending or tasks:
                if time.monotonic() - progressed > GIVE_UP_S:
                    raise RuntimeError(f"Deployment '{self.deployment.name}' had no ready replica or no room for "
                                       f"{GIVE_UP_S} s; start it (or add replicas) and run the job again.")
                while pending and len(tasks) < WINDOW:
                    chunk = pending.pop(0)
                    tasks[asyncio.create_task(self._send(chunk[1]))] = chunk
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                busy = False
                for task in finished:
                    start, chunk = tasks.pop(task)
                    result = task.result()
                    if result is None:
                        pending.insert(0, (start, chunk))
                        busy = True
                    else:
                        outputs[start:start + len(chunk)] = result
                        done_texts += len(chunk)
                        progressed = time.monotonic()
                # raises JobCancelled when a cancel was asked: the finally below stops what is in flight
                await sync_to_async(self.job.report)(done_texts / max(1, len(self.texts)),
                                                     f"{done_texts} of {len(self.texts)} texts predicted")
                if busy:
                    await asyncio.sleep(RETRY_S)
            return outputs
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_redis_client()

    async def _send(self, texts: list[str]) -> list[Any] | None:
        """The chunk's results, or None: no room right now, send it again later. Other errors fail the job."""
        deployment = self.deployment
        call = Call(deployment.name, deployment.queue, deployment.config,
                    {"kind": "predict", "input": texts, "top_k": 1})
        try:
            await call.open()
            done = await call.done()
            return list(done["results"])
        except ApiError as exc:
            if exc.status in BUSY:
                return None
            raise RuntimeError(f"The deployment refused a chunk ({exc.status} {exc.code}): {exc.message}") from exc
        finally:
            await call.close()
