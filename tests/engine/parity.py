"""Greedy parity with Hugging Face `generate`, allowing only genuine near-ties.

Batched float32 matmuls round differently from single ones, so where two candidates' logits
are within 1e-4 the batched run may pick the other one. `assert_greedy_parity` accepts a
divergence only at such a step (shown on the reference model's own logits) and fails on any
other difference."""

from __future__ import annotations

from typing import Any

import torch

NEAR_TIE = 1e-4


def hf_greedy(model: Any, prompt_ids: list[int], max_new_tokens: int, eos: bool = True) -> list[int]:
    ids = torch.tensor([prompt_ids])
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": 0}
    if not eos:
        kwargs["eos_token_id"] = None
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    return out[0, len(prompt_ids):].tolist()


def top2_gap(model: Any, ids: list[int]) -> float:
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])


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
