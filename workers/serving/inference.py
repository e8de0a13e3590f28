"""The `tauon.infer` task: one request of a deployment, fed into this process's replica of it.

Run by the worker's thread pool, so concurrent requests share the engine's batches; the answer goes to
the request's Redis stream as events (`Events`), which the web side (console/inference) turns into
OpenAI's responses."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import shared_task
from redis.exceptions import RedisError

from console.deployments import live
from workers.serving.host import hosted
from workers.serving.replica import Loaded, NotServing, Runner

log = logging.getLogger(__name__)


class Events:
    """The request's Redis stream: `accepted`, then `delta`s and `finish` per choice, then `done`;
    or a single `error` (with the HTTP status the web side answers)."""

    def __init__(self, request_id: str):
        self.key = live.stream_key(request_id)
        self.redis = live.client()

    def send(self, kind: str, **data: Any) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.key, {"e": json.dumps({"type": kind, **data})})
        pipe.expire(self.key, live.STREAM_TTL_S)
        pipe.execute()

    def error(self, status: int, code: str, message: str, param: str | None = None) -> None:
        self.send("error", status=status, code=code, message=message, param=param)


# At most once, by design (not acks_late): the message is acknowledged as the task starts, so a worker that
# dies mid-request loses it rather than having the broker hand it to another replica later. An interactive
# client is waiting on this request's stream: once the request is `accepted` the web side sees the replica's
# heartbeat vanish and answers `replica_lost` within TAUON_REPLICA_LOST_S, and the client retries; a
# redelivered request would instead run again for a client that has gone (and a sampled answer would differ
# from the half it already streamed). A message the worker received (prefetched) but had not started is
# claimed as it arrives (consumers.py), so its client gets `replica_lost` as soon as that worker's heartbeat
# is gone too; the broker hands the message back only after its visibility timeout, past its deadline:
# dropped below.
@shared_task(name="tauon.infer", ignore_result=True, acks_late=False)
def infer(deployment: str, request_id: str, request: dict[str, Any]) -> None:
    """Serve one request of `deployment`: kind `generate`, `embed` or `predict` (see console/inference)."""
    events = Events(request_id)
    runner = hosted(deployment)
    if time.time() > request["deadline"]:
        _free_place(deployment, request_id)
        return  # the client has given up already
    if runner is None:
        events.error(503, "replica_unavailable", f"No replica of '{deployment}' on this worker; retry.")
        _free_place(deployment, request_id)
        return
    try:
        loaded = runner.acquire()
    except NotServing as exc:
        events.error(503, "replica_unavailable", f"{exc}; retry.")
        _free_place(deployment, request_id)
        return
    try:
        if request["kind"] == "generate":
            _generate(runner, loaded, request_id, request, events)
        elif request["kind"] == "embed":
            _embed(loaded, request, events)
        else:
            _predict(loaded, request, events)
    except Exception as exc:  # noqa: BLE001 - the client gets the reason instead of a hang
        log.exception("request %s on %s failed", request_id, deployment)
        events.error(500, "engine_error", f"{exc.__class__.__name__}: {exc}")
    finally:
        runner.release(loaded)
        _free_place(deployment, request_id)


def _free_place(deployment: str, request_id: str) -> None:
    """The request is over here (answered, failed, refused or past its deadline): its place (the web side's
    admission) is free. The web side frees it too when its client's answer ends; doing it here as well means a
    client that died without a word (a killed web process, a killed batch job) holds a place no longer than
    its generation, not until its deadline."""
    try:
        live.client().zrem(live.inflight_key(deployment), request_id)
    except RedisError:
        log.warning("could not free the place of request %s", request_id, exc_info=True)


def _generate(runner: Runner, loaded: Loaded, request_id: str, request: dict[str, Any],
              events: Events) -> None:
    from engine import SamplingParams
    from engine.errors import EngineError, Overloaded

    engine = loaded.engine
    base = dict(request["params"])
    seed = base.pop("seed", None)
    handles: list[Any] = []
    try:
        for i in range(request.get("n", 1)):
            params = SamplingParams(**base, seed=None if seed is None else seed + i)
            handles.append(engine.generate(request["prompt"], params))
    except (EngineError, ValueError) as exc:
        for handle in handles:
            handle.cancel()
        if isinstance(exc, Overloaded):
            events.error(429, "overloaded", f"{exc}; retry shortly.")
        else:
            code = getattr(exc, "code", "invalid_request")
            field = getattr(exc, "param", None) or ("messages" if isinstance(request["prompt"], list)
                                                    and isinstance(request["prompt"][0], dict) else "prompt")
            events.error(400, "context_length_exceeded" if code == "prompt_too_long" else code, str(exc), field)
        return
    runner.host.watch(request_id, handles, request["deadline"])
    try:
        events.send("accepted", replica=runner.key, version=loaded.version_number)
        prompt_tokens = completion_tokens = 0
        for i, handle in enumerate(handles):
            for delta in handle.coalesced():  # deltas that queued up while it sent go as one event
                events.send("delta", i=i, text=delta.text, ids=delta.token_ids,
                            lp=[[t.token, t.logprob, t.top] for t in delta.logprobs])
            done = handle.result()
            prompt_tokens = done.usage.prompt_tokens
            completion_tokens += done.usage.completion_tokens
            runner.admission.observe(done, engine, request["deadline"])
            events.send("finish", i=i, reason=done.finish_reason, ttft_s=done.ttft_s,
                        completion_tokens=done.usage.completion_tokens)
        events.send("done", usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
    finally:
        runner.host.unwatch(request_id)


def _embed(loaded: Loaded, request: dict[str, Any], events: Events) -> None:
    result = loaded.engine.embed(request["input"], priority=int(request.get("priority", 0)))
    events.send("accepted", version=loaded.version_number)
    events.send("done", embeddings=result.vectors.tolist(), usage={"prompt_tokens": result.prompt_tokens,
                                                                   "completion_tokens": 0})


def _predict(loaded: Loaded, request: dict[str, Any], events: Events) -> None:
    engine = loaded.engine
    priority = int(request.get("priority", 0))  # a predict job's chunks: 1, after interactive requests' batches
    events.send("accepted", version=loaded.version_number)
    if hasattr(engine, "classify"):
        labels = engine.classify(request["input"], top_k=request.get("top_k"), priority=priority)
        results: list[Any] = [[{"label": x.label, "score": x.score} for x in row] for row in labels]
    elif hasattr(engine, "entities"):
        results = [[{"entity_group": e.entity_group, "score": e.score, "word": e.word, "start": e.start,
                     "end": e.end} for e in row] for row in engine.entities(request["input"], priority=priority)]
    else:
        events.error(400, "wrong_task", "This deployment does not classify; use /v1 for it.")
        return
    events.send("done", results=results, usage={"prompt_tokens": 0, "completion_tokens": 0})
