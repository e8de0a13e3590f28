"""KV cache blocks as ints: a fixed pool sized from `kv_cache_bytes`, handed out in contiguous runs.

The runner preallocates the pool once; a sequence owns the blocks in its `block_table`, and the
blocks return to the pool the moment it finishes, is cancelled or is preempted.

Attention reads a sequence's keys and values in place, as one view per run of consecutive blocks
(engine/runner.py), so placement matters: a newcomer is placed at the start of a free run long
enough for the length it may reach (prompt + max_new_tokens), and takes that whole run while the
pool has room, so that its answer grows into blocks next to its prompt. Blocks held past what a
sequence has written are spare: `reclaim` hands them back before anyone is preempted."""

from __future__ import annotations

from engine.sequence import Sequence

FREE, USED = 1, 0


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise ValueError("the KV cache budget holds no block; raise kv_cache_bytes")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free = bytearray([FREE]) * num_blocks  # one byte per block: runs are found by bytes.find
        self.num_free = num_blocks

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def blocks_needed(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def spare(self, seq: Sequence) -> int:
        """Blocks `seq` holds beyond those its tokens so far need (a reservation not yet grown into)."""
        return max(0, len(seq.block_table) - self.blocks_needed(len(seq)))

    def can_hold(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(num_tokens) - len(seq.block_table) <= self.num_free

    def hold(self, seq: Sequence, num_tokens: int, *, reserve_tokens: int = 0) -> bool:
        """Make `seq` own blocks for its first `num_tokens` tokens; False (nothing taken) when the pool is
        short. A sequence with no block yet may take a run for `reserve_tokens` when the pool has room."""
        missing = self.blocks_needed(num_tokens) - len(seq.block_table)
        if missing <= 0:
            return True
        if missing > self.num_free:
            return False
        if not seq.block_table:  # a newcomer: a run for its whole reach if there is one, else for its need
            for n in dict.fromkeys((max(missing, self.blocks_needed(reserve_tokens)), missing)):
                start = self._find_run(n) if n <= self.num_free else -1
                if start >= 0:
                    self._take(seq, range(start, start + n))
                    return True
        while missing:  # grow next to the last block where it is free
            last = seq.block_table[-1] if seq.block_table else -1
            nxt = last + 1 if 0 <= last + 1 < self.num_blocks and self._free[last + 1] == FREE else self._free.find(FREE)
            self._take(seq, (nxt,))
            missing -= 1
        return True

    def reclaim(self, seq: Sequence) -> int:
        """Give back the spare blocks at the end of `seq`'s table; returns how many."""
        n = self.spare(seq)
        if n:
            self._give(seq.block_table[-n:])
            del seq.block_table[-n:]
        return n

    def free(self, seq: Sequence) -> None:
        self._give(seq.block_table)
        seq.block_table = []
        seq.num_computed = 0

    def _find_run(self, n: int) -> int:
        return self._free.find(bytes([FREE]) * n) if n > 0 else -1

    def _take(self, seq: Sequence, blocks: range | tuple[int, ...]) -> None:
        for b in blocks:
            assert self._free[b] == FREE, f"block {b} is in use"
            self._free[b] = USED
        seq.block_table.extend(blocks)
        self.num_free -= len(blocks)

    def _give(self, blocks: list[int]) -> None:
        for b in blocks:
            self._free[b] = FREE
        self.num_free += len(blocks)


def runs(block_table: list[int], num_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """The cache slots of a sequence's first `num_tokens` tokens as (first slot, length) runs of
    consecutive slots: one run when its blocks are contiguous."""
    out: list[tuple[int, int]] = []
    left = num_tokens
    for b in block_table:
        if left <= 0:
            break
        n = min(block_size, left)
        start = b * block_size
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((start, n))
        left -= n
    return out
