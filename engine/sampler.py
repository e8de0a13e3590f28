"""Next-token choice for a batch: penalties, greedy or temperature/top-k/top-p sampling with
each request's own seeded generator, and logprobs of the chosen token plus top alternatives.

Logprobs are those of the model's distribution (log-softmax of the raw logits), as OpenAI and
vLLM report them, whatever the sampling settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.sequence import Sequence


@dataclass(slots=True)
class Sample:
    token_id: int
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), best first


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@torch.inference_mode()
def sample(logits: torch.Tensor, seqs: list[Sequence], generators: list[torch.Generator | None]) -> list[Sample]:
    """logits: [B, V] float32, one row per sequence, in order."""
    params = [s.params for s in seqs]
    if all(p.plain and not p.logprobs for p in params):
        return [Sample(int(t)) for t in logits.argmax(dim=-1).tolist()]
    raw = logits
    logits = logits.clone()
    for row, seq in enumerate(seqs):
        _apply_penalties(logits[row], seq)
    chosen = logits.argmax(dim=-1)  # greedy rows keep this
    sampled_rows = [r for r, p in enumerate(params) if not p.greedy]
    if sampled_rows:
        rows = torch.tensor(sampled_rows, device=logits.device)
        sub = logits.index_select(0, rows)
        temps = torch.tensor([params[r].temperature for r in sampled_rows], device=logits.device)
        probs = _filtered_probs(sub / temps[:, None], [params[r].top_k for r in sampled_rows],
                                [params[r].top_p for r in sampled_rows])
        for j, r in enumerate(sampled_rows):
            chosen[r] = torch.multinomial(probs[j], 1, generator=generators[r])[0]
    out = [Sample(int(t)) for t in chosen.tolist()]
    want = [r for r, p in enumerate(params) if p.logprobs]
    if want:
        lp = torch.log_softmax(raw.index_select(0, torch.tensor(want, device=raw.device)), dim=-1)
        for j, r in enumerate(want):
            out[r].logprob = float(lp[j, out[r].token_id])
            k = params[r].top_logprobs
            if k:
                vals, idx = lp[j].topk(k)
                out[r].top = list(zip(idx.tolist(), vals.tolist(), strict=True))
    return out


def _apply_penalties(row: torch.Tensor, seq: Sequence) -> None:
    p = seq.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(seq.token_ids)), device=row.device)
        vals = row[seen]
        row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and seq.num_output_tokens:
        out = torch.tensor(seq.output_token_ids, device=row.device)
        counts = torch.bincount(out, minlength=row.shape[0]).to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)


def _filtered_probs(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Softmax after masking all but the top_k tokens and the smallest set reaching top_p."""
    if all(k == 0 for k in top_k) and all(p >= 1.0 for p in top_p):
        return torch.softmax(logits, dim=-1)
    vals, idx = logits.sort(dim=-1, descending=True)  # [b, V]
    V = logits.shape[-1]
    ranks = torch.arange(V, device=logits.device)[None, :]
    ks = torch.tensor([k if k > 0 else V for k in top_k], device=logits.device)[:, None]
    vals = vals.masked_fill(ranks >= ks, float("-inf"))
    probs = torch.softmax(vals, dim=-1)
    ps = torch.tensor(top_p, device=logits.device, dtype=probs.dtype)[:, None]
    drop = (probs.cumsum(dim=-1) - probs) >= ps  # keep the token that crosses top_p
    vals = vals.masked_fill(drop, float("-inf"))
    return torch.zeros_like(logits).scatter_(-1, idx, torch.softmax(vals, dim=-1))
