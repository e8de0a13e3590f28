"""Adaptive admission wired to the real Redis and the engine's real scheduler: a replica whose p99 TTFT
passes its deployment's `ttft_target_ms` narrows both the sequences its scheduler runs per step and the
requests the web side admits (the ADMIT script refuses sooner), and lets go of both when the target is
removed. The control law itself is tested in tests/engine/test_tuning.py."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from console.deployments import live
from console.deployments.config import normalize
from engine.scheduler import Scheduler
from workers.serving.admission import AdaptiveAdmission


def engine_with_scheduler(max_num_seqs: int) -> Any:
    return SimpleNamespace(scheduler=Scheduler(max_num_seqs=max_num_seqs, max_batch_tokens=256, max_queue=64,
                                               num_blocks=64, block_size=16))


def admit(name: str, capacity: int, request: str) -> int:
    r = live.client()
    r.zadd(live.live_key(name), {"replica-a": time.time() + 60})
    return int(r.eval(live.ADMIT, *live.admit_args(name, request, time.time() + 60, capacity, live.opener())))


def test_a_slow_replica_narrows_admission_and_a_removed_target_lets_go() -> None:
    name = f"adaptive-{time.time_ns()}"
    config = normalize({"engine": {"max_num_seqs": 8, "max_queue": 8}, "ttft_target_ms": 100})
    engine = engine_with_scheduler(8)
    admission = AdaptiveAdmission(name, expiry_s=30)
    admission.configure(config, engine)
    assert admission.figures()["admit_limit"] == 8  # the running batch, before any TTFT is known
    for _ in range(8):  # 50 ms in the engine after 450 ms waiting for a worker thread, against a 100 ms target
        sent = time.time() - 0.5
        done = SimpleNamespace(ttft_s=0.05, total_s=0.05)
        admission.observe(done, engine, deadline=sent + config["timeout_s"])
    limit = int(live.client().get(live.admit_key(name)))
    assert limit < 8 and engine.scheduler.max_num_seqs == limit
    assert admission.figures()["ttft_target_ms"] == 100 and admission.figures()["ttft_p99_ms"] >= 450  # waiting counts
    admitted = [admit(name, 16, f"req-{i}") for i in range(16)]
    assert admitted.count(1) == limit and admitted[limit:] == [0] * (16 - limit)  # refused sooner
    governor = admission.governor
    governor._samples.clear()  # (ten seconds later: the slow requests have left the window)
    governor._changed_at -= 5  # (the law changes the cap at most once a second)
    for _ in range(8):
        admission.observe(SimpleNamespace(ttft_s=0.01, total_s=0.01), engine)
    assert int(live.client().get(live.admit_key(name))) == limit + 1  # well under the target: widens

    admission.configure(normalize({"engine": {"max_num_seqs": 8, "max_queue": 8}}), engine)
    assert live.client().get(live.admit_key(name)) is None and engine.scheduler.max_num_seqs == 8
    assert admission.figures() == {}
