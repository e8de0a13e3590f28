"""All tensor work for causal LMs: the model forward over a paged KV cache.

The Hugging Face model supplies the weights; the forward is ours so that a batch of sequences of
different lengths shares every matmul: each step packs every sequence's new tokens (one for a
decode, a chunk for a prefill) into one [T, hidden] matrix (no padding) and runs attention per
sequence over its keys and values in the block cache. Llama-family models (Llama, Mistral,
Qwen2, SmolLM) and GPT-2 are supported natively."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.block_manager import runs
from engine.errors import UnsupportedModel
from engine.families import LLAMA_LIKE
from engine.sequence import Sequence


class LlamaLayer(nn.Module):
    """One decoder layer with q/k/v and gate/up fused into single matmuls."""

    def __init__(self, layer: nn.Module, act: nn.Module):
        super().__init__()
        a, m = layer.self_attn, layer.mlp
        self.input_norm, self.post_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.qkv = _fuse([a.q_proj, a.k_proj, a.v_proj])
        self.o = a.o_proj
        self.gate_up = _fuse([m.gate_proj, m.up_proj])
        self.down = m.down_proj
        self.act = act


class LlamaStack(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        cfg, inner = model.config, model.model
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads
        self.scale = self.head_dim ** -0.5
        from transformers.activations import ACT2FN

        self.embed, self.norm, self.rotary = inner.embed_tokens, inner.norm, inner.rotary_emb
        self.layers = nn.ModuleList(LlamaLayer(layer, ACT2FN[cfg.hidden_act]) for layer in inner.layers)
        self.lm_head = model.lm_head
        # the fused copies replace the originals: drop Hugging Face's layers so memory is not doubled
        # (the model object is no longer usable for its own forward)
        inner.layers = nn.ModuleList()

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)  # [..., hidden]

    def with_positions(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, object]:
        cos, sin = self.rotary(x, pos[None])  # x: [T, hidden] → [1, T, D]
        return x, (cos[0, :, None, :], sin[0, :, None, :])

    def layer_scale(self, i: int) -> float:
        return self.scale

    def qkv(self, i: int, x: torch.Tensor, rope: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        layer = self.layers[i]
        h, d = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        qkv = layer.qkv(layer.input_norm(x))
        q, k, v = qkv.split([h, d, d], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)  # [T, H, D]
        k = k.view(-1, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        cos, sin = rope  # type: ignore[misc]
        return _rotate(q, cos, sin), _rotate(k, cos, sin), v.view(-1, self.num_kv_heads, self.head_dim)

    def post(self, i: int, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        x = x + layer.o(attn)
        gate, up = layer.gate_up(layer.post_norm(x)).chunk(2, dim=-1)
        return x + layer.down(layer.act(gate) * up)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(h))


class GPT2Stack(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        cfg, inner = model.config, model.transformer
        self.num_heads = self.num_kv_heads = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.scale = self.head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
        self.by_layer = cfg.scale_attn_by_inverse_layer_idx
        self.wte, self.wpe, self.ln_f = inner.wte, inner.wpe, inner.ln_f
        self.layers = inner.h
        self.lm_head = model.lm_head

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.wte(ids)  # [..., hidden]

    def with_positions(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, object]:
        return x + self.wpe(pos), None

    def layer_scale(self, i: int) -> float:
        return self.scale / (i + 1) if self.by_layer else self.scale

    def qkv(self, i: int, x: torch.Tensor, rope: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        block = self.layers[i]
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(self.num_heads * self.head_dim, dim=-1)
        shape = (-1, self.num_heads, self.head_dim)
        return q.view(shape), k.view(shape), v.view(shape)

    def post(self, i: int, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        block = self.layers[i]
        x = x + block.attn.c_proj(attn)
        return x + block.mlp(block.ln_2(x))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(h))


def _fuse(linears: list[nn.Linear]) -> nn.Linear:
    first = linears[0]
    has_bias = first.bias is not None
    fused = nn.Linear(first.in_features, sum(li.out_features for li in linears), bias=has_bias,
                      device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([li.weight for li in linears]))
        if has_bias:
            fused.bias.copy_(torch.cat([li.bias for li in linears]))
    return fused


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def build_stack(model: nn.Module) -> nn.Module:
    model_type = model.config.model_type
    if model_type in LLAMA_LIKE:
        return LlamaStack(model)
    if model_type == "gpt2":
        return GPT2Stack(model)
    raise UnsupportedModel(f"the engine runs Llama-family ({', '.join(LLAMA_LIKE)}) and GPT-2 causal LMs; "
                           f"this model is {model_type!r}")


# --- the forward ----------------------------------------------------------------------------------------
# A stack (LlamaStack, GPT2Stack) is a model family's parts: token_embeddings → with_positions → per layer
# qkv, attention, post → logits. `run_stack` is the one loop over them; its callers differ only in how
# attention reads keys and values: the serving step over the paged KV cache (ModelRunner.forward), or
# causal attention within each of a batch of same-length sequences (dense_forward: perplexity, calibration,
# attribution in engine/attribute.py).

Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (layer, q, k, v) → [T, H*D]


def run_stack(stack: nn.Module, x: torch.Tensor, pos: torch.Tensor, attend: Attend) -> torch.Tensor:
    """Hidden states [T, hidden] (before the head) from token embeddings x [T, hidden] at positions pos [T];
    `attend(i, q [T, H, D], k [T, Hkv, D], v [T, Hkv, D])` is layer i's attention output [T, H*D]."""
    h, rope = stack.with_positions(x, pos)
    for i in range(len(stack.layers)):
        q, k, v = stack.qkv(i, h, rope)
        h = stack.post(i, h, attend(i, q, k, v))
    return h


def dense_forward(stack: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Hidden states [B, L, hidden] of B sequences of the same length from their token embeddings x [B, L, hidden]
    (positions from 0), without any KV cache: one [B, L] block, causal, no padding."""
    B, L, H = x.shape
    gqa = stack.num_heads != stack.num_kv_heads

    def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.view(B, L, t.shape[1], t.shape[2]).transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=stack.layer_scale(i), enable_gqa=gqa)
        return o.transpose(1, 2).reshape(B * L, -1)

    pos = torch.arange(L, device=x.device).repeat(B)
    return run_stack(stack, x.reshape(B * L, H), pos, attend).view(B, L, -1)


@torch.inference_mode()
def full_forward(stack: nn.Module, ids: list[int]) -> torch.Tensor:
    """Logits [T, V] for every position of one sequence, without touching any KV cache
    (calibration and perplexity)."""
    ids_t = torch.tensor(ids, device=next(stack.parameters()).device)
    return stack.logits(dense_forward(stack, stack.token_embeddings(ids_t)[None])[0]).float()


def perplexity(stack: nn.Module, ids: list[int]) -> float:
    logits = full_forward(stack, ids)
    nll = F.cross_entropy(logits[:-1], torch.tensor(ids[1:], device=logits.device))
    return float(torch.exp(nll))


# Decodes whose contexts are all this short attend in one batched call over a padded copy of their blocks:
# copying a few hundred tokens costs less than a call per sequence. Longer ones read the cache in place.
GATHER_MAX_CONTEXT = 256


class StepInterrupted(Exception):
    """A step stopped between layers because more urgent work arrived (see `ModelRunner.forward`)."""


@dataclass(slots=True)
class _Gather:
    """Short decodes attended together: their rows, their blocks (padded) and which slots are real."""

    rows: torch.Tensor  # [B]
    blocks: torch.Tensor  # [B * nb]
    mask: torch.Tensor  # [B, 1, 1, nb * block_size]


@dataclass(slots=True)
class _Span:
    """One sequence's rows in a step: `n` new tokens at rows [row, row + n), positions from `start`."""

    row: int
    n: int
    start: int
    runs: list[tuple[int, int]]  # cache slots of positions [0, start + n), as (first slot, length)
    blocks: torch.Tensor | None = None  # its blocks, when they are split into several runs


class ModelRunner:
    """Owns the model stack and the preallocated KV cache: kv[layer, k|v, kv_head, block, slot, dim].

    One forward serves every step, whatever it mixes: the new tokens of all sequences (a decode's one,
    a prefill chunk's many) are packed into one [T, hidden] matrix so that every matmul is shared,
    their keys and values are written into the cache, and attention runs per sequence, reading its
    cached keys and values in place: one strided view of the cache per run of contiguous blocks (the
    block manager keeps a sequence's blocks together), gathered (copied) only when its blocks are split.
    Decodes with short contexts are the exception: they attend in one call over a padded gather."""

    def __init__(self, stack: nn.Module, *, num_blocks: int, block_size: int, device: torch.device,
                 dtype: torch.dtype):
        self.stack, self.block_size, self.device = stack, block_size, device
        self.num_layers = len(stack.layers)
        shape = (self.num_layers, 2, stack.num_kv_heads, num_blocks, block_size, stack.head_dim)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.groups = stack.num_heads // stack.num_kv_heads

    @staticmethod
    def bytes_per_token(stack: nn.Module, dtype: torch.dtype) -> int:
        n = len(stack.layers) * 2 * stack.num_kv_heads * stack.head_dim
        return n * torch.empty((), dtype=dtype).element_size()

    @torch.inference_mode()
    def forward(self, seqs: list[Sequence], num_new: list[int],
                interrupt: Callable[[], bool] | None = None) -> torch.Tensor:
        """Compute `num_new[i]` tokens of `seqs[i]` from its `num_computed` on, caching their keys and values.
        Returns next-token logits [S, V] (float32) for the sequences whose last token this computes, in order.
        `interrupt` is asked before each layer; when it answers True the step stops with `StepInterrupted`.
        Nothing is lost: the keys and values written so far lie past every sequence's `num_computed`, where
        the step that computes those tokens again writes them again."""
        bs, dev = self.block_size, self.device
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        spans: list[_Span] = []
        last: list[int] = []
        for seq, n in zip(seqs, num_new, strict=True):
            start, end = seq.num_computed, seq.num_computed + n
            row = len(ids)
            ids.extend(seq.token_ids[start:end])
            pos.extend(range(start, end))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            cached = runs(table, end, bs) if start else []
            blocks = torch.tensor(table[:(end + bs - 1) // bs], device=dev) if len(cached) > 1 else None
            spans.append(_Span(row, n, start, cached, blocks))
            if end == len(seq):
                last.append(row + n - 1)
        ids_t = torch.tensor(ids, device=dev)
        slots_t = torch.tensor(slots, device=dev)
        spans, gather = self._plan(spans)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if interrupt is not None and interrupt():
                raise StepInterrupted(f"interrupted at layer {i}")
            self._write(i, k, v, slots_t)  # q: [T, H, D]; k, v: [T, Hkv, D]
            return self._attend(i, q, k, v, spans, gather).view(len(ids), -1)

        x = run_stack(self.stack, self.stack.token_embeddings(ids_t), torch.tensor(pos, device=dev), attend)
        return self.stack.logits(x.index_select(0, torch.tensor(last, device=dev, dtype=torch.long))).float()

    def _write(self, i: int, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
        # k, v: [T, Hkv, D] → cache slots (flattened block × slot)
        flat = self.kv[i].view(2, self.stack.num_kv_heads, -1, self.stack.head_dim)
        flat[0].index_copy_(1, slots, k.transpose(0, 1))
        flat[1].index_copy_(1, slots, v.transpose(0, 1))

    def _cached(self, i: int, sp: _Span) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [1, Hkv, L, D] of one sequence in layer i: views of the cache when its blocks are
        one run, else one gather of its blocks (a copy of this sequence alone)."""
        if sp.blocks is None:
            a, n = sp.runs[0]
            flat = self.kv[i].view(2, self.stack.num_kv_heads, -1, self.stack.head_dim)  # [2, Hkv, slots, D]
            return flat[0, None, :, a:a + n], flat[1, None, :, a:a + n]
        kv = self.kv[i].index_select(2, sp.blocks).flatten(2, 3)[:, None, :, :sp.start + sp.n]
        return kv[0], kv[1]

    def _plan(self, spans: list[_Span]) -> tuple[list[_Span], _Gather | None]:
        """Split off the short decodes to attend together; the rest attend one sequence at a time."""
        short = [sp for sp in spans if sp.n == 1 and 0 < sp.start < GATHER_MAX_CONTEXT]
        if len(short) < 2:
            return spans, None
        bs, dev = self.block_size, self.device
        tables = [[a // bs + j for a, n in sp.runs for j in range((n + bs - 1) // bs)] for sp in short]
        nb = max(len(t) for t in tables)
        ctx = torch.tensor([sp.start + 1 for sp in short], device=dev)
        mask = (torch.arange(nb * bs, device=dev)[None, :] < ctx[:, None]).view(len(short), 1, 1, nb * bs)
        gather = _Gather(torch.tensor([sp.row for sp in short], device=dev),
                         torch.tensor([b for t in tables for b in t + [0] * (nb - len(t))], device=dev), mask)
        return [sp for sp in spans if not (sp.n == 1 and 0 < sp.start < GATHER_MAX_CONTEXT)], gather

    def _attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: list[_Span],
                gather: _Gather | None) -> torch.Tensor:
        Hkv, G, D = self.stack.num_kv_heads, self.groups, self.stack.head_dim
        scale = self.stack.layer_scale(i)
        out = torch.empty_like(q)
        if gather is not None:  # [2, Hkv, B * nb, bs, D] → keys, values [B, Hkv, L, D]
            B, L = gather.mask.shape[0], gather.mask.shape[-1]
            kv = self.kv[i].index_select(2, gather.blocks).view(2, Hkv, B, L, D).transpose(1, 2)
            o = F.scaled_dot_product_attention(q.index_select(0, gather.rows).view(B, Hkv, G, D), kv[0], kv[1],
                                               attn_mask=gather.mask, scale=scale)
            out.index_copy_(0, gather.rows, o.reshape(B, -1, D))
        for sp in spans:  # 4-D inputs throughout: CPU's fused (flash) kernel takes nothing else
            rows = slice(sp.row, sp.row + sp.n)
            if sp.start == 0:  # a whole prompt, or its first chunk: its own keys, causal
                qs, ks, vs = (t[rows].transpose(0, 1)[None] for t in (q, k, v))  # [1, H, n, D], [1, Hkv, n, D]
                o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=G > 1)
                out[rows] = o[0].transpose(0, 1)
                continue
            ks, vs = self._cached(i, sp)  # [1, Hkv, start + n, D], views of the cache
            if sp.n == 1:  # a decode: the G query heads sharing a kv head act as G query rows
                o = F.scaled_dot_product_attention(q[sp.row].view(1, Hkv, G, D), ks, vs, scale=scale)
                out[sp.row] = o.reshape(-1, D)
            else:  # a later chunk: every cached key up to each token's own position
                ctx = sp.start + sp.n
                mask = (torch.arange(ctx, device=q.device)[None, :]
                        <= torch.arange(sp.start, ctx, device=q.device)[:, None])  # [n, ctx]
                o = F.scaled_dot_product_attention(q[rows].transpose(0, 1)[None], ks, vs, attn_mask=mask,
                                                   scale=scale, enable_gqa=G > 1)
                out[rows] = o[0].transpose(0, 1)
        return out
