"""All tensor work for causal LMs: the model forward over a paged KV cache.

The Hugging Face model supplies the weights; the forward is ours so that a batch of sequences of
different lengths shares every matmul: prefill packs the newcomers' tokens into one [T, hidden]
matrix (no padding) and runs attention per sequence; decode runs one token per running sequence
and reads each one's keys/values from the block cache. Llama-family models (Llama, Mistral,
Qwen2, SmolLM) and GPT-2 are supported natively."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UnsupportedModel
from engine.sequence import Sequence

LLAMA_LIKE = ("llama", "mistral", "qwen2")


def supported(model_type: str) -> bool:
    return model_type in LLAMA_LIKE or model_type == "gpt2"


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

    def embed_tokens(self, ids: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, object]:
        x = self.embed(ids)  # [T, hidden]
        cos, sin = self.rotary(x, pos[None])  # [1, T, D]
        return x, (cos[0, :, None, :], sin[0, :, None, :])

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

    def embed_tokens(self, ids: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, object]:
        return self.wte(ids) + self.wpe(pos), None

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


@dataclass(slots=True)
class CacheShape:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    bytes_per_token: int


def build_stack(model: nn.Module) -> nn.Module:
    model_type = model.config.model_type
    if model_type in LLAMA_LIKE:
        return LlamaStack(model)
    if model_type == "gpt2":
        return GPT2Stack(model)
    raise UnsupportedModel(f"the engine runs Llama-family ({', '.join(LLAMA_LIKE)}) and GPT-2 causal LMs; "
                           f"this model is {model_type!r}")


@torch.inference_mode()
def full_forward(stack: nn.Module, ids: list[int]) -> torch.Tensor:
    """Logits [T, V] for every position of one sequence, without touching any KV cache
    (calibration and perplexity)."""
    dev = next(stack.parameters()).device
    ids_t = torch.tensor(ids, device=dev)
    x, rope = stack.embed_tokens(ids_t, torch.arange(len(ids), device=dev))
    for i in range(len(stack.layers)):
        q, k, v = stack.qkv(i, x, rope)
        scale = stack.layer_scale(i) if hasattr(stack, "layer_scale") else stack.scale
        o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                           is_causal=True, scale=scale,
                                           enable_gqa=stack.num_heads != stack.num_kv_heads)
        x = stack.post(i, x, o[0].transpose(0, 1).reshape(len(ids), -1))
    return stack.logits(x).float()


def perplexity(stack: nn.Module, ids: list[int]) -> float:
    logits = full_forward(stack, ids)
    nll = F.cross_entropy(logits[:-1], torch.tensor(ids[1:], device=logits.device))
    return float(torch.exp(nll))


class ModelRunner:
    """Owns the model stack and the preallocated KV cache: kv[layer, k|v, kv_head, block, slot, dim]."""

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

    def _slots(self, seq: Sequence, start: int, end: int) -> list[int]:
        bs, table = self.block_size, seq.block_table
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    def _layer_scale(self, i: int) -> float:
        fn = getattr(self.stack, "layer_scale", None)
        return fn(i) if fn else self.stack.scale

    def _write(self, i: int, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
        # k, v: [T, Hkv, D] → cache slots (flattened block × slot)
        flat = self.kv[i].view(2, self.stack.num_kv_heads, -1, self.stack.head_dim)
        flat[0].index_copy_(1, slots, k.transpose(0, 1))
        flat[1].index_copy_(1, slots, v.transpose(0, 1))

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> torch.Tensor:
        """Run every not-yet-cached token of `seqs`; returns next-token logits [B, V] (float32)."""
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        spans: list[tuple[int, int]] = []
        for seq in seqs:
            start, end = seq.num_computed, len(seq)
            spans.append((len(ids), end - start))
            ids.extend(seq.token_ids[start:end])
            pos.extend(range(start, end))
            slots.extend(self._slots(seq, start, end))
        dev = self.device
        ids_t = torch.tensor(ids, device=dev)
        pos_t = torch.tensor(pos, device=dev)
        slots_t = torch.tensor(slots, device=dev)
        x, rope = self.stack.embed_tokens(ids_t, pos_t)  # x: [T, hidden]
        for i in range(self.num_layers):
            q, k, v = self.stack.qkv(i, x, rope)  # q: [T, H, D]; k, v: [T, Hkv, D]
            self._write(i, k, v, slots_t)
            out = torch.empty_like(q)
            scale = self._layer_scale(i)
            for s, n in spans:  # attention per sequence; matmuls above and below are shared
                qs, ks, vs = (t[s:s + n].transpose(0, 1)[None] for t in (q, k, v))  # [1, H, n, D]
                o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale,
                                                   enable_gqa=self.groups > 1)
                out[s:s + n] = o[0].transpose(0, 1)
            x = self.stack.post(i, x, out.view(len(ids), -1))
        last = torch.tensor([s + n - 1 for s, n in spans], device=dev)
        return self.stack.logits(x.index_select(0, last)).float()

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """One token per sequence (its last, not yet cached); returns logits [B, V] (float32)."""
        dev, bs = self.device, self.block_size
        B = len(seqs)
        ids_t = torch.tensor([s.token_ids[-1] for s in seqs], device=dev)
        pos = [len(s) - 1 for s in seqs]
        pos_t = torch.tensor(pos, device=dev)
        slots_t = torch.tensor([s.block_table[p // bs] * bs + p % bs for s, p in zip(seqs, pos, strict=True)],
                               device=dev)
        nb = max(len(s.block_table) for s in seqs)
        table = torch.tensor([s.block_table + [0] * (nb - len(s.block_table)) for s in seqs], device=dev)
        L = nb * bs
        mask = (torch.arange(L, device=dev)[None, :] <= pos_t[:, None]).view(B, 1, 1, L)
        Hkv, D, G = self.stack.num_kv_heads, self.stack.head_dim, self.groups
        x, rope = self.stack.embed_tokens(ids_t, pos_t)  # x: [B, hidden]
        flat_table = table.view(-1)
        # one gather buffer reused by every layer of this step: [2, Hkv, B*nb, bs, D]
        buf = self.kv.new_empty((2, Hkv, B * nb, bs, D))
        for i in range(self.num_layers):
            q, k, v = self.stack.qkv(i, x, rope)  # q: [B, H, D]; k, v: [B, Hkv, D]
            self._write(i, k, v, slots_t)
            # gather this batch's blocks → keys, values [B, Hkv, L, D]
            kv = torch.index_select(self.kv[i], 2, flat_table, out=buf).view(2, Hkv, B, L, D).transpose(1, 2)
            # the G query heads sharing a kv head act as G query rows: [B, Hkv, G, D]
            o = F.scaled_dot_product_attention(q.view(B, Hkv, G, D), kv[0], kv[1], attn_mask=mask,
                                               scale=self._layer_scale(i))
            x = self.stack.post(i, x, o.reshape(B, -1))
        return self.stack.logits(x).float()
