"""Adaptive admission for one replica: engine/latency_governor.py's control law wired to the places it
acts on. With `ttft_target_ms` in the deployment's config, each finished request's TTFT feeds the governor;
when it narrows or widens, the engine's scheduler runs at most that many sequences per step (never more
than the tuned max_num_seqs; on llama.cpp, the requests handed to it at once) and the web side admits at
most that many requests in flight per replica (this replica's field of the `tauon:admit:<deployment>` hash;
the ADMIT script sums the live replicas' caps), so overload is refused sooner with 429 and Retry-After
instead of queueing past the target. Without a target it does nothing."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from console.deployments import live
from engine.latency_governor import LatencyGovernor

log = logging.getLogger(__name__)


class AdaptiveAdmission:
    def __init__(self, deployment: str, replica: str, expiry_s: int):
        self.deployment, self.replica, self.expiry_s = deployment, replica, expiry_s
        self.governor: LatencyGovernor | None = None
        self._key: tuple[int, int, int] | None = None  # (target, max_num_seqs, capacity) it was built for
        self._lock = threading.Lock()
        self.timeout_s = 0.0

    def configure(self, config: dict[str, Any], engine: Any) -> None:
        """Follow the deployment's config (called every heartbeat): build, rebuild or drop the governor."""
        target = int(config.get("ttft_target_ms") or 0)
        seqs = int(config["engine"]["max_num_seqs"])
        capacity = seqs + int(config["engine"]["max_queue"])
        self.timeout_s = float(config.get("timeout_s", 0))
        key = (target, seqs, capacity)
        with self._lock:
            if key == self._key:
                self._publish(engine)
                return
            self._key = key
            self.governor = LatencyGovernor(target, ceiling=capacity, floor=1) if target else None
            if self.governor is not None:  # start at the running batch; widen into the queue as TTFT allows
                self.governor.limit = seqs
            self._max_seqs = seqs
        if target == 0:
            live.client().hdel(live.admit_key(self.deployment), self.replica)
            _set_seqs(engine, seqs)
        self._publish(engine)

    def observe(self, done: Any, engine: Any, deadline: float | None = None) -> None:
        """One finished request (an engine Completion); the law may narrow or widen at once. With the request's
        `deadline` its TTFT counts from when the web side sent it (deadline - timeout_s), so the time it
        waited in the queue for a worker thread counts too, as its client saw it."""
        governor = self.governor
        if governor is None or done.ttft_s is None:
            return
        ttft_s = done.ttft_s
        if deadline is not None:
            submitted = time.time() - done.total_s  # when the engine got it
            ttft_s += max(0.0, submitted - (deadline - self.timeout_s))
        governor.observe(ttft_s)
        decision = governor.update()
        if decision.action in ("narrow", "widen"):
            log.info("adaptive admission for %s: %s to %s (p99 TTFT %.0f ms, target %.0f ms)", self.deployment,
                     decision.action, decision.limit, decision.p99_ms or 0, governor.target_ms)
            self._publish(engine)

    def _publish(self, engine: Any) -> None:
        governor = self.governor
        if governor is None:
            return
        governor.update()
        _set_seqs(engine, min(self._max_seqs, governor.limit))
        pipe = live.client().pipeline(transaction=False)
        pipe.hset(live.admit_key(self.deployment), self.replica, governor.limit)
        pipe.expire(live.admit_key(self.deployment), self.expiry_s)
        pipe.execute()

    def figures(self) -> dict[str, Any]:
        governor = self.governor
        if governor is None:
            return {}
        p99 = governor.p99_ms()
        return {"ttft_target_ms": governor.target_ms, "admit_limit": governor.limit,
                "ttft_p99_ms": None if p99 is None else round(p99, 1)}


def _set_seqs(engine: Any, seqs: int) -> None:
    limit = getattr(engine, "limit_seqs", None)  # encoders have no seats to narrow
    if limit is not None:
        limit(seqs)  # the torch scheduler's seats per step, or the requests llama.cpp gets at once
