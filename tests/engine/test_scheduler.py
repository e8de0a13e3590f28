"""The scheduler and block manager are int bookkeeping: tested here without any weights."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.config import EngineConfig, SamplingParams
from engine.errors import Overloaded
from engine.scheduler import Scheduler
from engine.sequence import FinishReason, Sequence, Status


def seq(n: int, max_new: int = 8) -> Sequence:
    return Sequence(list(range(1, n + 1)), SamplingParams(max_new_tokens=max_new))


def sched(**kw: int) -> Scheduler:
    opts = dict(max_num_seqs=4, max_batch_tokens=64, max_queue=8, num_blocks=16, block_size=4)
    opts.update(kw)
    return Scheduler(**opts)


def test_engine_imports_neither_django_nor_celery() -> None:
    code = ("import sys, engine, engine.llm_engine, engine.runner, engine.encoders, engine.api, engine.quantize, "
            "engine.scheduler; bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'celery')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_it_validates_engine_config() -> None:
    with pytest.raises(ValueError, match="quantization must be one of"):
        EngineConfig(quantization="int3")
    with pytest.raises(ValueError, match="max_num_seqs must be a positive integer"):
        EngineConfig(max_num_seqs=0)
    assert EngineConfig(device="auto").resolved_device() in ("cpu", "cuda")


def test_it_validates_sampling_params() -> None:
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    assert SamplingParams(stop="x").stop == ["x"]  # type: ignore[arg-type]
    assert SamplingParams(top_logprobs=3).logprobs


def test_it_prefills_newcomers_together_within_the_token_budget() -> None:
    s = sched(max_batch_tokens=20)
    a, b, c = seq(8), seq(8), seq(8)
    for x in (a, b, c):
        s.add(x)
    batch = s.schedule()
    assert batch and batch.is_prefill and batch.seqs == [a, b]
    assert batch.num_tokens == 16
    assert [x.status for x in (a, b, c)] == [Status.RUNNING, Status.RUNNING, Status.WAITING]
    assert s.block_manager.num_used == 4  # 2 blocks of 4 tokens each


def test_a_prompt_larger_than_the_token_budget_still_runs_alone() -> None:
    s = sched(max_batch_tokens=4)
    a = seq(10)
    s.add(a)
    batch = s.schedule()
    assert batch and batch.seqs == [a]


def test_it_admits_no_more_than_max_num_seqs() -> None:
    s = sched(max_num_seqs=2)
    seqs = [seq(2) for _ in range(3)]
    for x in seqs:
        s.add(x)
    assert s.schedule().seqs == seqs[:2]  # type: ignore[union-attr]
    for x in seqs[:2]:
        x.append_token(7)
    batch = s.schedule()
    assert batch and not batch.is_prefill and batch.seqs == seqs[:2]


def test_a_full_queue_raises_overloaded() -> None:
    s = sched(max_queue=2)
    s.add(seq(2))
    s.add(seq(2))
    with pytest.raises(Overloaded, match="queue is full"):
        s.add(seq(2))


def test_newcomers_join_between_decode_steps() -> None:
    s = sched()
    a = seq(3)
    s.add(a)
    s.schedule()
    a.num_computed = 3
    a.append_token(5)
    assert s.schedule().seqs == [a]  # type: ignore[union-attr]
    b = seq(3)
    s.add(b)
    batch = s.schedule()
    assert batch and batch.is_prefill and batch.seqs == [b]
    b.append_token(5)
    batch = s.schedule()
    assert batch and not batch.is_prefill and batch.seqs == [a, b]


def test_decode_takes_a_new_block_at_the_boundary() -> None:
    s = sched()
    a = seq(4)
    s.add(a)
    s.schedule()
    assert len(a.block_table) == 1
    a.append_token(9)  # token 5 is written by the next decode step: needs a second block
    s.schedule()
    assert len(a.block_table) == 2


def test_finishing_and_cancelling_give_blocks_back() -> None:
    s = sched(num_blocks=4)
    a, b = seq(8), seq(8)
    s.add(a)
    s.add(b)
    s.schedule()
    assert s.block_manager.num_free == 0
    s.finish(a, FinishReason.STOP)
    assert s.block_manager.num_free == 2 and a.block_table == [] and a.is_finished
    s.finish(b, FinishReason.CANCELLED)
    assert s.block_manager.num_free == 4 and not s.has_work()
    c = seq(2)
    s.add(c)
    s.finish(c, FinishReason.CANCELLED)  # cancelled while still waiting
    assert not s.waiting


def test_it_waits_for_kv_blocks_and_reuses_them() -> None:
    s = sched(num_blocks=3)
    a, b = seq(8), seq(8)
    s.add(a)
    s.add(b)
    assert s.schedule().seqs == [a]  # type: ignore[union-attr]
    assert s.schedule().seqs == [a]  # type: ignore[union-attr]  # b waits: one block free, needs two
    s.finish(a, FinishReason.LENGTH)
    assert s.schedule().seqs == [b]  # type: ignore[union-attr]


def test_decode_preempts_the_youngest_when_blocks_run_out() -> None:
    s = sched(num_blocks=2)
    a, b = seq(4), seq(4)
    s.add(a)
    s.add(b)
    s.schedule()
    a.num_computed = b.num_computed = 4
    a.append_token(1)
    b.append_token(1)
    batch = s.schedule()
    assert batch and batch.seqs == [a]
    assert b.status is Status.WAITING and s.waiting[0] is b and b.block_table == [] and b.num_preemptions == 1


def test_it_refuses_a_sequence_larger_than_the_whole_cache() -> None:
    s = sched(num_blocks=2)
    with pytest.raises(RuntimeError, match="whole cache has 2"):
        s.add(seq(20))
