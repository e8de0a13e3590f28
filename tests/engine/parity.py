"""Greedy parity with Hugging Face `generate`, allowing only genuine near-ties.

Batched float32 matmuls round differently from single ones, so where two candidates' logits
are within 1e-4 the batched run may pick the other one. `assert_greedy_parity` accepts a
divergence only at such a step (shown on the reference model's own logits) and fails on any
other difference. The reference helpers live in bench/parity.py (the benchmarks use them too)."""

from __future__ import annotations

from typing import Any

from bench.parity import NEAR_TIE, top2_gap


def assert_greedy_parity(model: Any, prompt_ids: list[int], ours: list[int], theirs: list[int]) -> None:
    """`ours` must equal `theirs` token for token, up to the first step that is a near-tie."""
    n = min(len(ours), len(theirs))
    for i in range(n):
        if ours[i] != theirs[i]:
            gap = top2_gap(model, prompt_ids + theirs[:i])
            assert gap < NEAR_TIE, (f"token {i} differs ({ours[i]} vs {theirs[i]}) and the top two logits "
                                    f"were {gap:.2e} apart: not a near-tie")
            return
    assert len(ours) == len(theirs), f"lengths differ: {len(ours)} vs {len(theirs)}"
