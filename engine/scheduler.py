"""Continuous batching as int bookkeeping: who waits, who runs, who gets KV blocks.

Each step is either a prefill of newcomers (bounded by `max_num_seqs`, `max_batch_tokens` and the
free KV blocks) or one decode step for everything running. When decode runs out of blocks the
youngest running sequence is preempted: its blocks are freed and it goes back to the front of
the queue to be recomputed from its tokens."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.block_manager import BlockManager
from engine.errors import Overloaded
from engine.sequence import FinishReason, Sequence, Status


@dataclass(slots=True)
class Batch:
    seqs: list[Sequence]
    is_prefill: bool

    @property
    def num_tokens(self) -> int:
        return sum(len(s) - s.num_computed for s in self.seqs) if self.is_prefill else len(self.seqs)


class Scheduler:
    def __init__(self, *, max_num_seqs: int, max_batch_tokens: int, max_queue: int, num_blocks: int,
                 block_size: int):
        self.max_num_seqs, self.max_batch_tokens, self.max_queue = max_num_seqs, max_batch_tokens, max_queue
        self.block_manager = BlockManager(num_blocks, block_size)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.max_queue:
            raise Overloaded(f"the engine queue is full ({self.max_queue} requests waiting); retry shortly")
        need = self.block_manager.blocks_needed(len(seq) + 1)
        if need > self.block_manager.num_blocks:
            raise RuntimeError(f"sequence needs {need} KV blocks; the whole cache has {self.block_manager.num_blocks}")
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def schedule(self) -> Batch | None:
        prefill: list[Sequence] = []
        tokens = 0
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            n = len(seq)
            # one prompt larger than the token budget still runs, alone
            if prefill and tokens + n > self.max_batch_tokens:
                break
            if not self.block_manager.can_allocate(seq):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq)
            seq.status = Status.RUNNING
            self.running.append(seq)
            prefill.append(seq)
            tokens += n
        if prefill:
            return Batch(prefill, is_prefill=True)
        if not self.running:
            return None
        decode: list[Sequence] = []
        for seq in list(self.running):
            if seq.status is not Status.RUNNING:
                continue  # preempted below while making room for an older one
            while not self.block_manager.can_append(seq):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                self.block_manager.append(seq)
                decode.append(seq)
        return Batch(decode, is_prefill=False) if decode else None

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = Status.WAITING
        seq.num_preemptions += 1
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
