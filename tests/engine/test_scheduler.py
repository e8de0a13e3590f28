"""The scheduler and block manager are int bookkeeping: tested here without any weights."""

from __future__ import annotations

import pytest

from engine.block_manager import runs
from engine.config import EngineConfig, SamplingParams
from engine.errors import Overloaded
from engine.scheduler import MAX_SKIPS, Scheduler
from engine.sequence import FinishReason, Sequence, Status


def seq(n: int, max_new: int = 8) -> Sequence:
    return Sequence(list(range(1, n + 1)), SamplingParams(max_new_tokens=max_new))


def sched(**kw: float) -> Scheduler:
    opts: dict[str, float] = dict(max_num_seqs=4, max_batch_tokens=64, max_queue=8, num_blocks=16, block_size=4)
    opts.update(kw)
    return Scheduler(**opts)


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


def advance(s: Scheduler) -> dict[Sequence, int]:
    """Run one step as the engine does (without weights): every sequence computes its tokens, and one
    that reached its end gets a token (token 7), finishing at max_new_tokens. Returns {seq: tokens}."""
    batch = s.schedule()
    assert batch is not None, "no batch while there is work"
    bm = s.block_manager
    for seq, n, done in zip(batch.seqs, batch.num_new, batch.completes(), strict=True):
        assert seq.status is Status.RUNNING and len(seq.block_table) >= bm.blocks_needed(seq.num_computed + n)
        seq.num_computed += n
        if done:
            seq.append_token(7)
            if seq.num_output_tokens >= seq.params.max_new_tokens:
                s.finish(seq, FinishReason.LENGTH)
    return dict(zip(batch.seqs, batch.num_new, strict=True))


def drive(s: Scheduler, max_steps: int = 10_000) -> int:
    """Steps until every sequence finished; fails on a stall or a livelock."""
    for step in range(max_steps):
        if not s.has_work():
            return step
        advance(s)
    raise AssertionError(f"still working after {max_steps} steps: a livelock")


def test_newcomers_are_prefilled_together_within_the_token_budget() -> None:
    s = sched(max_batch_tokens=20)
    a, b, c = seq(8), seq(8), seq(8)
    for x in (a, b, c):
        s.add(x)
    batch = s.schedule()
    assert batch and batch.seqs == [a, b, c] and batch.num_new == [8, 8, 4]  # c's first chunk fills the budget
    assert batch.num_tokens == 20 and batch.completes() == [True, True, False]


def test_a_long_prompt_is_prefilled_in_chunks_while_running_sequences_decode_every_step() -> None:
    s = sched(max_batch_tokens=8, num_blocks=64)
    a = seq(4, max_new=50)
    s.add(a)
    advance(s)
    long = seq(40)
    s.add(long)
    chunks = []
    while not long.num_output_tokens:
        step = advance(s)
        assert step[a] == 1  # a decodes in every step of the long prefill
        chunks.append(step[long])
    assert sum(chunks) == 40 and max(chunks) == 4  # a quarter of the budget (one block) beside a's decodes


def test_a_long_prompt_alone_takes_the_whole_budget_and_a_short_one_is_never_capped() -> None:
    s = sched(max_batch_tokens=16, num_blocks=64)
    long = seq(40)
    s.add(long)
    assert advance(s)[long] == 16  # nobody decodes: no cap
    s2 = sched(max_batch_tokens=16, num_blocks=64)
    a, short = seq(4, max_new=20), seq(12)
    s2.add(a)
    advance(s2)
    s2.add(short)
    assert advance(s2)[short] == 12  # within two budgets: one step, beside a's decode


def test_later_chunks_of_a_long_prompt_are_smaller_as_their_attention_grows() -> None:
    s = sched(max_batch_tokens=64, num_blocks=256, attention_weight=0.01)
    long = seq(600)
    s.add(long)
    chunks = []
    while not long.num_output_tokens:
        chunks.append(advance(s)[long])
    assert chunks[0] == int(64 / (1 + 64 * 0.01)) and chunks[-2] < chunks[0] / 4


def test_the_shortest_prompt_is_admitted_first() -> None:
    s = sched(max_batch_tokens=10)
    long, short = seq(30), seq(3)
    s.add(long)
    s.add(short)
    batch = s.schedule()
    assert batch and batch.seqs == [short, long] and batch.num_new == [3, 7]


def test_a_sequence_passed_over_too_often_goes_first() -> None:
    s = sched(max_batch_tokens=4, max_num_seqs=64, num_blocks=4096, max_queue=4096)
    long = seq(12)
    s.add(long)
    for _ in range(MAX_SKIPS + 1):
        s.add(seq(2, max_new=1))
        s.add(seq(2, max_new=1))
        if long.status is Status.RUNNING:
            break
        advance(s)
    assert long.skips == MAX_SKIPS and long.status is Status.RUNNING


def test_it_admits_no_more_than_max_num_seqs() -> None:
    s = sched(max_num_seqs=2)
    seqs = [seq(2) for _ in range(3)]
    for x in seqs:
        s.add(x)
    assert advance(s).keys() == set(seqs[:2])
    assert advance(s).keys() == set(seqs[:2]) and seqs[2].status is Status.WAITING


def test_a_full_queue_raises_overloaded() -> None:
    s = sched(max_queue=2)
    s.add(seq(2))
    s.add(seq(2))
    with pytest.raises(Overloaded, match="queue is full"):
        s.add(seq(2))


def test_a_newcomer_takes_a_contiguous_run_for_its_whole_answer_and_grows_into_it() -> None:
    s = sched(num_blocks=32)
    a, b = seq(5, max_new=10), seq(5, max_new=10)
    s.add(a)
    s.add(b)
    advance(s)
    assert a.block_table == [0, 1, 2, 3] and b.block_table == [4, 5, 6, 7]  # 15 tokens each: 4 blocks
    for _ in range(8):
        advance(s)
    assert a.block_table == [0, 1, 2, 3] and runs(a.block_table, len(a), 4) == [(0, 14)]


def test_spare_blocks_are_reclaimed_before_anyone_is_preempted() -> None:
    s = sched(num_blocks=6)
    a = seq(4, max_new=16)  # reaches 20 tokens: takes 5 blocks while the pool has them
    s.add(a)
    advance(s)
    assert len(a.block_table) == 5
    b = seq(8, max_new=2)
    s.add(b)
    advance(s)  # b needs 2 blocks; one is free, a gives back its spare ones
    assert b.status is Status.RUNNING and a.status is Status.RUNNING and a.num_preemptions == 0
    assert len(a.block_table) == 2


def test_decode_preempts_the_youngest_when_blocks_run_out() -> None:
    s = sched(num_blocks=2)
    a, b = seq(4, max_new=4), seq(4, max_new=4)
    s.add(a)
    s.add(b)
    advance(s)
    step = advance(s)  # both need a second block for their fifth token; one pool block short
    assert list(step) == [a]
    assert b.status is Status.WAITING and s.waiting[0] is b and b.block_table == [] and b.num_preemptions == 1
    assert b.num_computed == 0  # recomputed from its tokens when it comes back


def test_finishing_and_cancelling_give_blocks_back() -> None:
    s = sched(num_blocks=4)
    a, b = seq(8, max_new=1), seq(8, max_new=1)
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


def test_it_refuses_a_sequence_that_could_outgrow_the_whole_cache() -> None:
    s = sched(num_blocks=2)
    with pytest.raises(ValueError, match="may reach 12 tokens; the whole KV cache holds 8"):
        s.add(seq(4))  # 4 prompt + 8 new


def test_four_sequences_in_a_cache_that_fits_two_all_complete() -> None:
    s = sched(num_blocks=10, max_batch_tokens=16)  # 40 tokens; each sequence reaches 20
    seqs = [seq(12, max_new=8) for _ in range(4)]
    for x in seqs:
        s.add(x)
    drive(s)
    assert all(x.finish_reason is FinishReason.LENGTH and x.num_output_tokens == 8 for x in seqs)
    assert s.block_manager.num_free == 10


def test_a_sequence_needing_the_whole_cache_completes_beside_others() -> None:
    s = sched(num_blocks=8, max_batch_tokens=8)  # 32 tokens
    big = seq(20, max_new=12)  # reaches exactly 32
    small = [seq(4, max_new=4) for _ in range(3)]
    for x in (*small, big):
        s.add(x)
    drive(s)
    assert all(x.is_finished for x in (*small, big)) and big.num_output_tokens == 12


def test_runs_join_contiguous_blocks() -> None:
    assert runs([3, 4, 5, 9, 10, 2], 22, 4) == [(12, 12), (36, 8), (8, 2)]
    assert runs([3, 4, 5], 5, 4) == [(12, 5)]


def background(n: int, max_new: int = 8) -> Sequence:
    return Sequence(list(range(1, n + 1)), SamplingParams(max_new_tokens=max_new, priority=1))


def test_an_interactive_request_is_admitted_before_waiting_background_ones() -> None:
    s = sched(max_num_seqs=2, max_batch_tokens=64)
    jobs = [background(3) for _ in range(3)]
    for b in jobs:
        s.add(b)
    interactive = seq(20)  # longer and later than every batch line: still first
    s.add(interactive)
    batch = s.schedule()
    assert batch and batch.seqs == [interactive]  # and no background prefill beside it in its step
    assert advance(s) and s.running[1:] == [jobs[0]]  # the next step fills the spare seat


def test_background_leaves_the_reserved_seats_free_and_an_arrival_takes_one_without_preempting() -> None:
    s = sched(max_num_seqs=8, max_batch_tokens=64, num_blocks=64, max_queue=16)
    assert s.background_reserve == 1
    jobs = [background(4, max_new=30) for _ in range(9)]
    for b in jobs:
        s.add(b)
    advance(s)
    assert s.running == jobs[:7]  # every seat but the reserved one
    advance(s)
    assert s.running == jobs[:7] and len(s.waiting) == 2  # still: the reserve is not lent out
    interactive = seq(4, max_new=4)
    s.add(interactive)
    step = advance(s)
    assert step == {interactive: 4}  # admitted at once, and computed alone in its first step
    assert s.num_preemptions == 0
    drive(s)
    assert all(b.num_output_tokens == 30 for b in jobs) and interactive.num_output_tokens == 4


def test_background_yields_a_seat_when_interactive_work_has_taken_the_reserve() -> None:
    s = sched(max_num_seqs=3, max_batch_tokens=64, num_blocks=64)
    first = seq(4, max_new=30)
    s.add(first)
    jobs = [background(4, max_new=30) for _ in range(2)]
    for b in jobs:
        s.add(b)
    advance(s)
    advance(s)
    assert s.running == [first, *jobs]  # one interactive in the reserve, the batch in the rest
    interactive = seq(4, max_new=4)
    s.add(interactive)
    step = advance(s)
    assert step[interactive] == 4  # admitted in the very next step
    assert jobs[1].status is Status.WAITING and jobs[1].num_preemptions == 1  # the youngest batch line yielded
    assert jobs[0] not in step and first in step  # background sits out the arrival's first step
    drive(s)
    assert all(b.num_output_tokens == 30 for b in jobs)  # the preempted line is recomputed, not lost


def test_background_sits_out_the_steps_of_an_interactive_prefill_and_keeps_its_cache() -> None:
    s = sched(max_num_seqs=4, max_batch_tokens=16, num_blocks=64, block_size=4)
    jobs = [background(4, max_new=40) for _ in range(3)]
    for b in jobs:
        s.add(b)
    advance(s)
    tables = [list(b.block_table) for b in jobs]
    interactive = seq(40, max_new=4)  # 40 tokens at 16 per step: three focused steps
    s.add(interactive)
    steps = []
    while interactive.num_output_tokens == 0:
        steps.append(advance(s))
    assert len(steps) == 3 and all(set(step) == {interactive} for step in steps)
    assert [list(b.block_table) for b in jobs] == tables and s.num_preemptions == 0
    step = advance(s)
    assert set(step) == {interactive, *jobs}  # after its first token, everyone decodes together
    drive(s)
    assert all(b.num_output_tokens == 40 for b in jobs)


def test_interactive_requests_never_yield_seats_to_each_other() -> None:
    s = sched(max_num_seqs=2, max_batch_tokens=64, num_blocks=64)
    a, b = seq(4, max_new=20), seq(4, max_new=20)
    s.add(a)
    s.add(b)
    advance(s)
    c = seq(4)
    s.add(c)
    step = advance(s)
    assert c not in step and a.num_preemptions == b.num_preemptions == 0


def test_a_full_cache_preempts_background_before_interactive() -> None:
    s = sched(max_num_seqs=4, max_batch_tokens=64, num_blocks=6, block_size=4)
    old = seq(4, max_new=12)  # interactive, oldest
    s.add(old)
    advance(s)
    bg = background(4, max_new=12)
    s.add(bg)
    young = seq(4, max_new=12)  # interactive, youngest
    s.add(young)
    while not s.num_preemptions:
        advance(s)
    assert bg.num_preemptions == 1 and young.num_preemptions == 0 and old.num_preemptions == 0  # first victim
    drive(s)
    assert all(x.num_output_tokens == 12 for x in (old, bg, young))


def test_priority_must_be_a_small_integer() -> None:
    with pytest.raises(ValueError, match="priority must be an integer"):
        SamplingParams(priority=-1)
