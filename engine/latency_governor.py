"""Adaptive admission: keep a replica's p99 time to first token under a target by narrowing how many
sequences it admits, and widening back toward the tuned maximum when there is room.

The control law is additive-increase / multiplicative-decrease on the admission limit (as TCP does for
its window), driven by the p99 TTFT of the requests that finished in the last `window_s` seconds:
  p99 > target            → limit × `decrease` (at least `floor`)
  p99 < `headroom` × target → limit + 1 (at most `ceiling`, the tuned max_num_seqs)
  otherwise               → hold.
A decision waits for `min_samples` fresh TTFTs and at most one change per `interval_s`, so one slow
request does not swing it. Plain Python: no torch, no Django."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Decision:
    limit: int
    p99_ms: float | None
    action: str  # narrow | widen | hold | wait


class LatencyGovernor:
    def __init__(self, target_ms: float, ceiling: int, *, floor: int = 1, window_s: float = 10.0,
                 interval_s: float = 1.0, decrease: float = 0.7, headroom: float = 0.6, min_samples: int = 4):
        if target_ms <= 0:
            raise ValueError(f"target_ms must be positive, got {target_ms!r}")
        if ceiling < 1 or floor < 1 or floor > ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor {floor}, ceiling {ceiling}")
        if not 0 < decrease < 1 or not 0 < headroom < 1:
            raise ValueError("decrease and headroom must be between 0 and 1")
        self.target_ms, self.ceiling, self.floor = float(target_ms), ceiling, floor
        self.window_s, self.interval_s, self.decrease, self.headroom = window_s, interval_s, decrease, headroom
        self.min_samples = min_samples
        self.limit = ceiling
        self._samples: deque[tuple[float, float]] = deque()  # (when, ttft ms)
        self._fresh = 0
        self._changed_at = -math.inf
        self._lock = threading.Lock()

    def observe(self, ttft_s: float, now: float | None = None) -> None:
        """One finished request's time to first token."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, ttft_s * 1000.0))
            self._fresh += 1

    def p99_ms(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            values = sorted(v for _, v in self._samples)
        if not values:
            return None
        return values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]

    def _trim(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def update(self, now: float | None = None) -> Decision:
        """Apply the law once (call it every step or heartbeat); the limit to admit under now."""
        now = time.monotonic() if now is None else now
        p99 = self.p99_ms(now)
        with self._lock:
            if p99 is None or self._fresh < self.min_samples or now - self._changed_at < self.interval_s:
                return Decision(self.limit, p99, "wait")
            action = "hold"
            if p99 > self.target_ms and self.limit > self.floor:
                self.limit, action = max(self.floor, int(self.limit * self.decrease)), "narrow"
            elif p99 < self.headroom * self.target_ms and self.limit < self.ceiling:
                self.limit, action = self.limit + 1, "widen"
            if action != "hold":
                self._changed_at, self._fresh = now, 0
                if action == "narrow":
                    self._samples.clear()  # judge the new limit on requests admitted under it
            return Decision(self.limit, p99, action)

    def retry_after_s(self) -> int:
        """What a refused client should wait: about one target's worth, at least a second."""
        return max(1, math.ceil(self.target_ms / 1000.0))
