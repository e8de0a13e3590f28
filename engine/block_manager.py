"""KV cache blocks as ints: a free list over a fixed pool sized from `kv_cache_bytes`.

The runner preallocates the pool once; a sequence owns the blocks in its `block_table`, and the
blocks return to the pool the moment it finishes, is cancelled or is preempted."""

from __future__ import annotations

from collections import deque

from engine.sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise ValueError("the KV cache budget holds no block; raise kv_cache_bytes")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_blocks: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free_blocks)

    def blocks_needed(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def can_allocate(self, seq: Sequence) -> bool:
        """Room for every token the prefill of `seq` will write."""
        return self.blocks_needed(len(seq)) <= self.num_free

    def allocate(self, seq: Sequence) -> None:
        assert not seq.block_table, f"sequence {seq.seq_id} already holds blocks"
        n = self.blocks_needed(len(seq))
        if n > self.num_free:
            raise RuntimeError(f"asked for {n} KV blocks with {self.num_free} free")
        seq.block_table = [self.free_blocks.popleft() for _ in range(n)]

    def can_append(self, seq: Sequence) -> bool:
        """Room for the token the next decode step writes (at position len(seq) - 1)."""
        return self.blocks_needed(len(seq)) <= len(seq.block_table) or self.num_free > 0

    def append(self, seq: Sequence) -> None:
        while self.blocks_needed(len(seq)) > len(seq.block_table):
            if not self.free_blocks:
                raise RuntimeError("no free KV block; call can_append first")
            seq.block_table.append(self.free_blocks.popleft())

    def free(self, seq: Sequence) -> None:
        self.free_blocks.extend(seq.block_table)
        seq.block_table = []
        seq.num_computed = 0
