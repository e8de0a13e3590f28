"""Greedy references from Hugging Face `generate`, and what counts as a near-tie.

Batched float32 matmuls round differently from single ones, so where two candidates' logits are
within `NEAR_TIE` the batched run may pick the other one; `top2_gap` measures that margin on the
reference model's own logits. The benchmarks and the parity tests (tests/engine/parity.py) share these."""

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
