"""The web side of the inference path: admit a request (or refuse it at once), send it to the
deployment's queue as a Celery task, then read its events from the Redis stream the worker writes.

A request waits at most the deployment's `timeout_s`. While it waits, a silent stream is checked
against the heartbeat of the replica that took the request (or, before one accepted it, of the worker
that received its message: workers/serving/consumers.py's claim), so a worker that dies with the request
turns into a 503 within a few seconds instead of a hang."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from console.deployments import live
from console.deployments.config import capacity
from console.inference.errors import ApiError
from workers.celery import app

log = logging.getLogger(__name__)
_clients: dict[int, aioredis.Redis] = {}


def redis_client() -> aioredis.Redis:
    """One asyncio Redis client per event loop (uvicorn has one; tests may make several)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(id(loop))
    if client is None:
        # Each streaming request holds a connection while it waits on its stream: a blocking pool makes a
        # burst wait for one (then RedisError → 503) instead of failing at once past its size.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, decode_responses=True, max_connections=settings.TAUON_REDIS_MAX_CONNECTIONS,
            timeout=5)
        client = _clients[id(loop)] = aioredis.Redis(connection_pool=pool)
    return client


async def close_redis_client() -> None:
    """Close this event loop's client (a loop that ends, as `asyncio.run` in a job does, must not leave
    it behind: a later loop could get the same id)."""
    client = _clients.pop(id(asyncio.get_running_loop()), None)
    if client is not None:
        await client.aclose()


def _send_task(queue: str, deployment: str, request_id: str, work: dict[str, Any]) -> None:
    app.send_task("tauon.infer", args=[deployment, request_id, work], queue=queue)


class Call:
    """One request in flight: `open()` admits and sends it, `first()` waits until a worker accepted
    it (or refused it with an error), `events()` yields the rest, `close()` lets go of its place."""

    def __init__(self, deployment: str, queue: str, config: dict[str, Any], work: dict[str, Any]):
        self.deployment, self.queue, self.config = deployment, queue, config
        self.request_id = f"req-{uuid.uuid4().hex}"
        self.timeout_s = float(config["timeout_s"])
        self.deadline = time.time() + self.timeout_s
        self.work = {**work, "deadline": self.deadline}
        self.redis = redis_client()
        self.key = live.stream_key(self.request_id)
        self.last_id = "0-0"
        self.replica: str | None = None
        self.admitted = False
        self.finished = False
        self._buffer: deque[dict[str, Any]] = deque()

    async def open(self) -> None:
        opener = live.opener_if_known() or await asyncio.to_thread(live.opener)  # the first takes the lease
        admitted = await self.redis.eval(live.ADMIT, *live.admit_args(self.deployment, self.request_id, self.deadline,
                                                                      capacity(self.config), opener))
        if admitted == -1:
            raise ApiError(503, f"Deployment '{self.deployment}' has no ready replica right now; "
                                "retry shortly (a worker may still be loading it).",
                           code="deployment_unavailable", retry_after=5)
        if admitted == 0:
            raise ApiError(429, f"Deployment '{self.deployment}' is at capacity (its queue is full); "
                                "retry after a moment.", code="queue_full", retry_after=1)
        self.admitted = True
        await asyncio.to_thread(_send_task, self.queue, self.deployment, self.request_id, self.work)

    async def _read(self) -> list[dict[str, Any]]:
        """The next events; [] after a quiet second (then liveness has been checked)."""
        remaining = self.deadline - time.time()
        if remaining <= 0:
            raise ApiError(504, f"The request did not finish within the deployment's timeout of "
                                f"{self.timeout_s:.0f} s.", code="timeout")
        block_ms = max(1, int(min(1.0, remaining) * 1000))
        reply = await self.redis.xread({self.key: self.last_id}, block=block_ms, count=256)
        if not reply:
            await self._check_alive()
            return []
        out = []
        for entry_id, fields in reply[0][1]:
            self.last_id = entry_id
            out.append(json.loads(fields["e"]))
        return out

    async def _check_alive(self) -> None:
        if self.replica is not None:
            if not await self.redis.exists(live.replica_key(self.replica)):
                raise ApiError(503, "The worker serving this request stopped responding; retry (another "
                                    "replica will take it).", code="replica_lost", retry_after=1)
        else:
            claimant = await self.redis.get(live.claim_key(self.request_id))  # a worker received it (prefetched)
            if claimant is not None and not await self.redis.exists(live.host_key(claimant)):
                raise ApiError(503, "The worker that received this request stopped responding before it started "
                                    "it; retry (another replica will take it).", code="replica_lost", retry_after=1)
            await self.redis.zremrangebyscore(live.live_key(self.deployment), "-inf", time.time())
            if not await self.redis.zcard(live.live_key(self.deployment)):
                raise ApiError(503, f"Deployment '{self.deployment}' lost its last ready replica before a "
                                    "worker took this request; retry shortly.", code="replica_lost", retry_after=5)

    async def _next(self) -> dict[str, Any]:
        while not self._buffer:
            self._buffer.extend(await self._read())
        event = self._buffer.popleft()
        if event["type"] == "error":
            self.finished = True
            status = int(event["status"])
            raise ApiError(status, event["message"], param=event.get("param"), code=event.get("code"),
                           retry_after=1 if status in (429, 503) else None)
        if event["type"] == "done":
            self.finished = True
        return event

    async def first(self) -> dict[str, Any]:
        """Wait until a worker accepted the request (returned) or refused it (raised as ApiError)."""
        event = await self._next()
        if event["type"] == "accepted":
            self.replica = event.get("replica")
        return event

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The events after `accepted`, up to and including `done`."""
        while not self.finished:
            yield await self._next()

    async def done(self) -> dict[str, Any]:
        """The final event (for answers that are not streamed)."""
        event = await self.first()
        while event["type"] != "done":
            event = await self._next()
        return event

    async def close(self) -> None:
        """Free the request's place; if it did not finish, ask its worker to cancel it."""
        if not self.admitted:
            return
        pipe = self.redis.pipeline(transaction=False)
        if not self.finished:
            pipe.set(live.cancel_key(self.request_id), "1", ex=int(self.timeout_s) + 60)
        pipe.zrem(live.inflight_key(self.deployment), self.request_id)
        pipe.delete(self.key)
        try:
            await pipe.execute()
        except RedisError:  # its place expires with its deadline; the worker stops at the deadline too
            log.warning("could not release request %s", self.request_id, exc_info=True)
