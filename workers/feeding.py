"""The one feeding loop of the jobs that send many requests through the gateway (the `batch` job,
workers/batch.py, and the `predict` job, workers/predict.py): keep a window of requests in flight, send again
later what the deployment had no room (429) or no replica (503) for, record each answer, and every CHECK_S
look for a reason to stop (a cancel, an expiry) and report progress.

`Share` is the fair share of a deployment's seats among the jobs feeding it: each owner with work running on
the deployment gets an equal part, split among that owner's own jobs, so one user's batches cannot take the
seats another user's batch needs (the per-user cap of active batches bounds how many one user runs at all)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from console.deployments import live
from console.inference.errors import ApiError
from console.inference.gateway import close_redis_client

CHECK_S = 0.5  # how often the loop looks for a reason to stop, and reports progress
RETRY_S = 0.5  # pause before sending again what the deployment had no room for
BUSY = (429, 503)  # no room or no replica right now: sent again later
SHARE_TTL_S = 15  # a feeder that stopped renewing its place in the share (its job died) drops out after this

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Stalled(RuntimeError):
    """Nothing was answered for `give_up_s`: the deployment has no replica or never any room."""


async def feed(items: Iterable[Item], send: Callable[[Item], Awaitable[Answer | None]],
               record: Callable[[Item, Answer], Awaitable[None]], check: Callable[[], Awaitable[str | None]],
               window: Callable[[], int], *, give_up_s: float | None = None, stalled: str = "") -> str | None:
    """Send every item, at most `window()` in flight (read again before each send: a share can change).

    `send(item)` answers it, or returns None (or raises an ApiError 429/503): no room now, send it again later,
    first. `record(item, answer)` keeps an answer. `check()`, at once and every CHECK_S, returns a reason to stop
    now, or None; it may raise (a job's JobCancelled). Returns None once every item is answered, else the reason.
    What is in flight when it stops is cancelled (each send closes its call: the worker stops it). `give_up_s`:
    raise Stalled(`stalled`) when nothing was answered for that long."""
    pending = deque(items)
    tasks: dict[asyncio.Task[Answer | None], Item] = {}
    checked, progressed = float("-inf"), time.monotonic()

    async def attempt(item: Item) -> Answer | None:
        try:
            return await send(item)
        except ApiError as exc:
            if exc.status in BUSY:
                return None
            raise

    try:
        while pending or tasks:
            if time.monotonic() - checked >= CHECK_S:
                checked = time.monotonic()
                reason = await check()
                if reason is not None:
                    return reason
            if give_up_s is not None and time.monotonic() - progressed > give_up_s:
                raise Stalled(stalled or f"Nothing was answered for {give_up_s:.0f} s.")
            while pending and len(tasks) < max(1, window()):
                item = pending.popleft()
                tasks[asyncio.create_task(attempt(item))] = item
            done, _ = await asyncio.wait(tasks, timeout=CHECK_S, return_when=asyncio.FIRST_COMPLETED)
            busy = False
            for task in done:
                item = tasks.pop(task)
                answer = task.result()
                if answer is None:
                    pending.appendleft(item)
                    busy = True
                else:
                    await record(item, answer)
                    progressed = time.monotonic()
            if busy:
                await asyncio.sleep(RETRY_S)
        return None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_redis_client()


class Share:
    """This feeder's part of a deployment's `seats`: seats ÷ owners feeding it now ÷ this owner's feeders there
    (at least 1). Each feeder renews its place (a Redis zset member `owner:name` scored by its expiry) whenever
    it asks, so a feeder whose job died drops out within SHARE_TTL_S."""

    def __init__(self, deployment: str, owner: object, name: str, seats: int):
        self.key = live.feeders_key(deployment)
        self.owner, self.member, self.seats = str(owner), f"{owner}:{name}", max(1, int(seats))

    def refresh(self) -> int:
        r = live.client()
        now = time.time()
        pipe = r.pipeline(transaction=True)
        pipe.zadd(self.key, {self.member: now + SHARE_TTL_S})
        pipe.zremrangebyscore(self.key, "-inf", now)
        pipe.zrange(self.key, 0, -1)
        pipe.expire(self.key, max(1, math.ceil(SHARE_TTL_S)))
        members = pipe.execute()[2]
        owners = {m.split(":", 1)[0] for m in members}
        mine = sum(m.split(":", 1)[0] == self.owner for m in members)
        return max(1, self.seats // max(1, len(owners)) // max(1, mine))

    def leave(self) -> None:
        live.client().zrem(self.key, self.member)
