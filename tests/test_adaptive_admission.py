"""Adaptive admission wired to the real Redis and the engine's real scheduler: a replica whose p99 TTFT
passes its deployment's `ttft_target_ms` narrows both the sequences its scheduler runs per step and the
requests the web side admits (the ADMIT script refuses sooner), and lets go of both when the target is
removed. The control law itself is tested in tests/engine/test_tuning.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from console.deployments import live
from console.deployments.config import normalize
from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from workers.serving.admission import AdaptiveAdmission


@pytest.fixture(scope="module")
def engine(llama_dir: Path) -> Iterator[LLMEngine]:
    """A real torch engine (tiny random weights) whose scheduler adaptive admission narrows."""
    with LLMEngine.from_pretrained(llama_dir, EngineConfig(max_num_seqs=8, kv_cache_bytes=4 << 20)) as e:
        yield e


def admit(name: str, capacity: int, request: str, replicas: tuple[str, ...] = ("replica-a",)) -> int:
    r = live.client()
    r.zadd(live.live_key(name), {key: time.time() + 60 for key in replicas})
    return int(r.eval(live.ADMIT, *live.admit_args(name, request, time.time() + 60, capacity, live.opener())))


def test_a_slow_replica_narrows_admission_and_a_removed_target_lets_go(engine: LLMEngine) -> None:
    name = f"adaptive-{time.time_ns()}"
    config = normalize({"engine": {"max_num_seqs": 8, "max_queue": 8}, "ttft_target_ms": 100})
    admission = AdaptiveAdmission(name, "replica-a", expiry_s=30)
    admission.configure(config, engine)
    assert admission.figures()["admit_limit"] == 8  # the running batch, before any TTFT is known
    for _ in range(8):  # 50 ms in the engine after 450 ms waiting for a worker thread, against a 100 ms target
        sent = time.time() - 0.5
        done = SimpleNamespace(ttft_s=0.05, total_s=0.05)
        admission.observe(done, engine, deadline=sent + config["timeout_s"])
    limit = int(live.client().hget(live.admit_key(name), "replica-a"))
    assert limit < 8 and engine.scheduler.max_num_seqs == limit
    assert admission.figures()["ttft_target_ms"] == 100 and admission.figures()["ttft_p99_ms"] >= 450  # waiting counts
    admitted = [admit(name, 16, f"req-{i}") for i in range(16)]
    assert admitted.count(1) == limit and admitted[limit:] == [0] * (16 - limit)  # refused sooner
    governor = admission.governor
    governor._samples.clear()  # (ten seconds later: the slow requests have left the window)
    governor._changed_at -= 5  # (the law changes the cap at most once a second)
    for _ in range(8):
        admission.observe(SimpleNamespace(ttft_s=0.01, total_s=0.01), engine)
    assert int(live.client().hget(live.admit_key(name), "replica-a")) == limit + 1  # well under the target: widens

    admission.configure(normalize({"engine": {"max_num_seqs": 8, "max_queue": 8}}), engine)
    assert live.client().hget(live.admit_key(name), "replica-a") is None and engine.scheduler.max_num_seqs == 8
    assert admission.figures() == {}


def test_with_several_replicas_the_shared_cap_is_the_sum_of_each_replicas_cap(engine: LLMEngine) -> None:
    """Two replicas with targets narrow to different caps: the web side admits their sum (not the last
    writer's cap times two); a replica with no target counts at its full capacity, a lost one not at all."""
    name = f"adaptive-sum-{time.time_ns()}"
    config = normalize({"engine": {"max_num_seqs": 8, "max_queue": 8}, "ttft_target_ms": 100})
    slow, fast = AdaptiveAdmission(name, "replica-a", 30), AdaptiveAdmission(name, "replica-b", 30)
    slow.configure(config, engine)
    fast.configure(config, engine)
    slow.governor.limit, fast.governor.limit = 2, 5  # (as their own TTFTs narrowed them)
    fast._publish(engine)
    slow._publish(engine)  # the last writer
    both = ("replica-a", "replica-b")
    admitted = [admit(name, 16, f"req-{i}", both) for i in range(12)]
    assert admitted.count(1) == 2 + 5 and admitted[7:] == [0] * 5
    live.client().delete(live.inflight_key(name))
    plain = AdaptiveAdmission(name, "replica-c", 30)  # a third replica, its deployment's target since removed
    plain.configure(normalize({"engine": {"max_num_seqs": 8, "max_queue": 8}}), engine)
    three = (*both, "replica-c")
    admitted = [admit(name, 16, f"more-{i}", three) for i in range(30)]
    assert admitted.count(1) == 2 + 5 + 16
    live.client().delete(live.inflight_key(name))
    live.client().zrem(live.live_key(name), "replica-b", "replica-c")  # lost: its cap no longer counts
    admitted = [admit(name, 16, f"last-{i}", ("replica-a",)) for i in range(4)]
    assert admitted.count(1) == 2
