"""Paced work: a long batch of rows run in short chunks, with a call between them, so that work of
lower priority (attribution) lets the serving engine go first and sees a cancel within a chunk.
Plain Python and torch; no Django, no Celery."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

Pause = Callable[[], None]  # called before every paced chunk: may wait (serving goes first) or raise (cancel)
CHUNK_S = 0.1  # a paced chunk runs about this long, so pauses (and cancels) come at least that often
FIRST_CHUNK_TOKENS = 256  # the first chunk, which measures the pace


class Pacer:
    """Runs a batch of rows in chunks of about `target_s` seconds each (sized by the pace measured on the
    chunks before), calling `pause` before each: the caller's chance to let other work go first, or to
    stop. Without a pacer a batch runs whole."""

    def __init__(self, pause: Pause, target_s: float | None = None):
        self.pause, self.target_s = pause, CHUNK_S if target_s is None else target_s
        self.tokens_per_s: float | None = None
        self.chunks = 0

    def rows(self, cost: int, limit: int) -> int:
        """Rows in the next chunk, each costing `cost` token-forwards, at most `limit`."""
        budget = FIRST_CHUNK_TOKENS if self.tokens_per_s is None else self.tokens_per_s * self.target_s
        return max(1, min(limit, int(budget // max(cost, 1))))

    def measured(self, tokens: int, seconds: float) -> None:
        self.tokens_per_s = tokens / max(seconds, 1e-4)
        self.chunks += 1

    def run(self, n: int, cost: int, fn: Callable[[slice], torch.Tensor]) -> torch.Tensor:
        """fn over rows [0, n) in paced chunks, concatenated along the first dimension."""
        out, start = [], 0
        while start < n:
            self.pause()
            k = self.rows(cost, n - start)
            began = time.perf_counter()
            out.append(fn(slice(start, start + k)))
            self.measured(k * cost, time.perf_counter() - began)
            start += k
        return torch.cat(out)


class ServingFirst:
    """A pause that lets serving go first: while `busy()` (the serving engine has requests to run) it
    waits, at most `max_wait_s` per pause so the paced work still moves under steady traffic, calling
    `check()` (which may raise, e.g. on a cancel) while it waits and once after."""

    def __init__(self, busy: Callable[[], bool] | None, max_wait_s: float, check: Callable[[], None] | None = None,
                 poll_s: float = 0.005):
        self.busy, self.max_wait_s, self.check, self.poll_s = busy, max_wait_s, check, poll_s
        self.pauses = 0
        self.waited_s = 0.0

    def __call__(self) -> None:
        self.pauses += 1
        if self.busy is not None and self.max_wait_s > 0:
            began = time.monotonic()
            until = began + self.max_wait_s
            while self.busy() and time.monotonic() < until:
                if self.check is not None:
                    self.check()
                time.sleep(self.poll_s)
            self.waited_s += time.monotonic() - began
        if self.check is not None:
            self.check()
