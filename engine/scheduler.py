"""Continuous batching as int bookkeeping: who waits, who runs, who gets KV blocks, and how many
tokens each computes in the next step.

Every step mixes decodes and prefill chunks under one token budget (`max_batch_tokens`), as vLLM's
scheduler does. Running sequences go first, oldest first: each decoding one computes its next
token, and a prompt still being prefilled computes its next chunk. Newcomers fill what is left of
the budget, shortest prefill first (a sequence that was preempted, or passed over for
`MAX_SKIPS` steps, goes before them). A long prompt is therefore prefilled in chunks between the
decode steps of everyone else instead of stalling them: while others decode, a prompt longer than
`LONG_PROMPT` steps' budget takes at most a quarter of each step, and a chunk's size shrinks as the
prompt's attention grows (`attention_weight`), so each step costs about the same.

Priorities (`SamplingParams.priority`, 0 interactive, higher for background work such as batches):
a waiting sequence of a more urgent priority is admitted before any of a lower one, and when every
seat is taken it takes the seat of the youngest running sequence of a lower priority, which is
preempted (recomputed later). Background work never takes the last `background_reserve` seats, so an
interactive arrival normally finds a seat without preempting anyone. Until urgent work has its first
token (it waits for a seat, or its prompt is being prefilled), steps are *focused*: they compute only
sequences at least that urgent, while less urgent running ones keep their cache and sit the steps out.
An interactive request's first token thus waits for at most the step in flight when it came, plus its
own prefill, alone; background work fills the spare capacity and yields.

When a running sequence needs a block and the pool is empty, spare blocks (reserved but not yet
grown into) are reclaimed first; then the youngest running sequence of the least urgent priority
is preempted: its blocks are freed and it waits to be recomputed from its tokens. A sequence never needs more blocks than the
whole cache holds (the engine refuses such a request), so the oldest one always progresses."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.admission import background_reserve
from engine.block_manager import BlockManager
from engine.errors import Overloaded
from engine.sequence import FinishReason, Sequence, Status

MAX_SKIPS = 8  # steps a waiting sequence may be passed over by later arrivals before it goes first
LONG_PROMPT = 2  # a prompt longer than this many steps' budget is prefilled in quarter-budget chunks beside decodes


@dataclass(slots=True)
class Batch:
    seqs: list[Sequence]
    num_new: list[int]  # tokens each sequence computes this step: 1 for a decode, a chunk for a prefill

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)

    def completes(self) -> list[bool]:
        """Which sequences reach their last token this step (and so sample the next one)."""
        return [s.num_computed + n == len(s) for s, n in zip(self.seqs, self.num_new, strict=True)]


class Scheduler:
    def __init__(self, *, max_num_seqs: int, max_batch_tokens: int, max_queue: int, num_blocks: int,
                 block_size: int, attention_weight: float = 0.0):
        self.max_num_seqs, self.max_batch_tokens, self.max_queue = max_num_seqs, max_batch_tokens, max_queue
        self.attention_weight = attention_weight  # cost of one cached key for a new token, in tokens
        self.block_manager = BlockManager(num_blocks, block_size)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0  # since start
        self.background_reserve = background_reserve(max_num_seqs)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.max_queue:
            raise Overloaded(f"the engine queue is full ({self.max_queue} requests waiting); retry shortly")
        bm = self.block_manager
        if bm.blocks_needed(self.reach(seq)) > bm.num_blocks:
            raise ValueError(f"sequence may reach {self.reach(seq)} tokens; the whole KV cache holds "
                             f"{bm.num_blocks * bm.block_size}")
        seq.status = Status.WAITING
        self.waiting.append(seq)

    @staticmethod
    def reach(seq: Sequence) -> int:
        """The most tokens `seq` can hold: its prompt and every token it may still generate."""
        return seq.num_prompt_tokens + seq.params.max_new_tokens

    def schedule(self) -> Batch | None:
        self._yield_seats()
        focus = self._focus()
        batch = self._build(focus) if focus is not None else None
        return batch or self._build(None)

    def _focus(self) -> int | None:
        """The priority of the most urgent work still before its first token (prefilling, or waiting
        with a seat free), when some running work is less urgent: the step computes only work at least
        that urgent. None: an ordinary step."""
        urgent = [s.params.priority for s in self.running if len(s) - s.num_computed > 1]
        if len(self.running) < self.max_num_seqs:
            urgent += [s.params.priority for s in self.waiting]
        if not urgent:
            return None
        focus = min(urgent)
        return focus if any(s.params.priority > focus for s in self.running) else None

    def _build(self, focus: int | None) -> Batch | None:
        """The next step's sequences and token counts; with `focus`, only those of priority ≤ focus."""
        seqs: list[Sequence] = []
        num_new: list[int] = []
        members = [s for s in self.running if focus is None or s.params.priority <= focus]
        decodes = sum(1 for s in members if len(s) - s.num_computed == 1)
        # decodes always run; prefill chunks share the rest of the budget (at least one block's worth)
        budget = max(self.max_batch_tokens - decodes, self.block_manager.block_size)
        preempted = False
        for seq in members:
            if seq.status is not Status.RUNNING:
                continue  # preempted below while making room for an older one
            left = len(seq) - seq.num_computed
            n = 1 if left == 1 else self._chunk(seq, budget, decodes)
            if n == 0:
                continue
            if not self._hold(seq, seq.num_computed + n):
                preempted = True
                continue
            seqs.append(seq)
            num_new.append(n)
            if left > 1:
                budget -= n
        if not preempted:  # a step that had to preempt admits nobody new
            admitted = self._admit(budget, decodes, seqs, num_new, focus)
            self._count_skips(admitted)
        return Batch(seqs, num_new) if seqs else None

    def _yield_seats(self) -> None:
        """Preempt running background sequences for waiting more urgent ones that find every seat taken
        (one each, youngest of the least urgent first)."""
        for priority in sorted(s.params.priority for s in self.waiting):
            if len(self.running) < self.max_num_seqs:
                break
            victims = [s for s in self.running if s.params.priority > priority]
            if not victims:
                break
            worst = max(s.params.priority for s in victims)
            self._preempt([s for s in victims if s.params.priority == worst][-1])

    def _chunk(self, seq: Sequence, budget: int, decodes: int) -> int:
        """Prefill tokens for `seq` within `budget`: fewer when they attend to a long cached prefix, and
        at most a quarter of the step's budget for a long prompt while others are decoding (so their
        tokens keep coming at a steady pace; short prompts still go through in one step)."""
        left = len(seq) - seq.num_computed
        n = min(left, budget)
        if decodes and len(seq) > LONG_PROMPT * self.max_batch_tokens:
            n = min(n, max(self.block_manager.block_size, self.max_batch_tokens // 4))
        if n > 0 and self.attention_weight:
            n = min(n, max(1, int(budget / (1 + (seq.num_computed + n) * self.attention_weight))))
        return max(n, 0)

    def _hold(self, seq: Sequence, num_tokens: int) -> bool:
        """Blocks for `seq`'s first `num_tokens` tokens, reclaiming spare blocks and then preempting the
        youngest running sequences for them; False when `seq` itself had to be preempted."""
        bm = self.block_manager
        while not bm.hold(seq, num_tokens):
            if any(bm.reclaim(s) for s in reversed(self.running)):
                continue
            victim = max(reversed(self.running), key=lambda s: s.params.priority)  # youngest least urgent
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _hold_new(self, seq: Sequence, num_tokens: int) -> bool:
        """Blocks for a newcomer's first chunk (and a run for its whole reach while the pool has room),
        reclaiming spare blocks of running sequences for it, youngest first; nobody is preempted."""
        bm = self.block_manager
        while not bm.hold(seq, num_tokens, reserve_tokens=self.reach(seq)):
            if not any(bm.reclaim(s) for s in reversed(self.running)):
                return False
        return True

    def _admission_order(self) -> list[Sequence]:
        def key(s: Sequence) -> tuple[int, bool, int, int]:
            first = s.num_preemptions > 0 or s.skips >= MAX_SKIPS
            return (s.params.priority, not first, len(s) - s.num_computed, s.seq_id)

        return sorted(self.waiting, key=key)

    def _admit(self, budget: int, decodes: int, seqs: list[Sequence], num_new: list[int],
               focus: int | None) -> list[Sequence]:
        admitted: list[Sequence] = []
        background = sum(1 for s in self.running if s.params.priority > 0)
        for seq in self._admission_order():
            if len(self.running) >= self.max_num_seqs or budget <= 0:
                break
            if focus is not None and seq.params.priority > focus:
                break
            if seq.params.priority > 0 and background >= self.max_num_seqs - self.background_reserve:
                break  # the reserved seats stay free for interactive arrivals
            if admitted and seq.params.priority > admitted[0].params.priority:
                break  # a step that admits urgent work admits no background prefill beside it: it stays short
            n = self._chunk(seq, budget, decodes)
            if n == 0 or not self._hold_new(seq, n):
                break
            self.waiting.remove(seq)
            seq.status = Status.RUNNING
            self.running.append(seq)
            seqs.append(seq)
            num_new.append(n)
            admitted.append(seq)
            background += seq.params.priority > 0
            budget -= n
        return admitted

    def _count_skips(self, admitted: list[Sequence]) -> None:
        if not admitted:
            return
        newest = max(s.seq_id for s in admitted)
        for seq in self.waiting:
            if seq.seq_id < newest:
                seq.skips += 1

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Take `seq` out of whichever queue holds it and give its blocks back."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        elif seq.status is Status.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason
