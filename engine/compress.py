"""Compression that writes a new model folder: pruning (magnitude, 2:4, Wanda) and dtype casting.

Framework-free: it reads a Hugging Face folder and writes another one, with plain weights, so the
child loads like any other version. Nothing here touches the registry; the `compress` job (console)
records the lineage and the recipe this module returns.

Which layers: the `nn.Linear` layers inside the decoder blocks (attention and MLP projections).
Embeddings and the output head stay dense, as in the Wanda paper. Architectures whose blocks use
other layer types (GPT-2's `Conv1D`) are refused with `UnsupportedMethod`. The method names and the
checks that need no weights live in `engine.compress_methods` (torch-free, the console reads them).

Methods:
- `magnitude`: unstructured, per layer: the smallest |W| of each matrix are set to zero.
- `wanda`: one-shot Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, with X the layer's inputs
  on calibration text, pruned per output row. The activation norms are taken in one forward pass
  of the dense model (the paper also uses the dense model's activations, layer by layer).
- `structure="2:4"` (either method): in each group of 4 consecutive input weights of a row, the 2
  lowest-scoring are zeroed (sparsity 0.5 exactly).
- `fp16` / `bf16`: the weights are cast and saved in that dtype (half the float32 size).
- `gguf-q8_0` / `gguf-q4_0`: a llama.cpp GGUF file beside its dequantized safetensors (engine/gguf_export.py);
  the child is a GGUF version, which runtime `auto` serves on llama.cpp. Llama models only.
- `int8` / `w8a8`: the engine's int8 modes (engine.quantize) applied once and stored as they run:
  int8 rows with per-row scales for every Linear, the token embeddings as int8 rows too, and for
  w8a8 the SmoothQuant input scaling calibrated on the given text. Loading packs them and
  re-quantizes nothing (a quarter of the float32 size on disk). Llama-family models only.

What it buys: zeros stored densely give no speedup and no size reduction by themselves (the child
is a plain safetensors folder the same size as the parent); 2:4 runs faster only on Ampere-and-later
GPUs through semi-structured sparse kernels. On this CPU, pruning is a quality/size experiment, not
a speed one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.compress_methods import (
    CAST_METHODS,
    GGUF_METHODS,
    PRUNE_METHODS,
    QUANT_METHODS,
    WEIGHT_SUFFIXES,
    UnsupportedMethod,
    check,
    check_model,
)

CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(slots=True)
class CompressResult:
    method: str
    recipe: dict[str, object]  # what was done, to record in the child version's config
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # pruned layers: share of zeros
    sparsity: float = 0.0  # zeros / weights over the pruned layers

    def as_dict(self) -> dict[str, object]:
        return {"method": self.method, "recipe": self.recipe, "sparsity": self.sparsity,
                "layer_sparsity": self.layer_sparsity}


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The decoder blocks' Linear layers by name; UnsupportedMethod where the blocks use other layers."""
    blocks = _decoder_blocks(model)
    found: dict[str, nn.Linear] = {}
    for i, block in enumerate(blocks):
        for name, mod in block.named_modules():
            if isinstance(mod, nn.Linear):
                found[f"layers.{i}.{name}"] = mod
    if not found:
        raise UnsupportedMethod(f"{type(model).__name__}: its decoder blocks have no nn.Linear layers to prune "
                                "(e.g. GPT-2's Conv1D); pruning supports Llama-style models")
    return found


def _decoder_blocks(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, getattr(model, "base_model_prefix", "model"), model)
    for attr in ("layers", "h", "blocks"):
        blocks = getattr(base, attr, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise UnsupportedMethod(f"{type(model).__name__}: no decoder block list found")


def magnitude_scores(linear: nn.Linear) -> torch.Tensor:
    return linear.weight.detach().float().abs()


def wanda_scores(linear: nn.Linear, input_norm: torch.Tensor) -> torch.Tensor:
    return linear.weight.detach().float().abs() * input_norm.float()[None, :]


def prune_mask(scores: torch.Tensor, *, sparsity: float, structure: str, per_row: bool) -> torch.Tensor:
    """Boolean mask of weights to keep (True) for a [out, in] score matrix."""
    if structure == "2:4":
        out, inp = scores.shape
        if inp % 4:
            raise UnsupportedMethod(f"2:4 needs input sizes divisible by 4 (got {inp})")
        groups = scores.reshape(out, inp // 4, 4)
        drop = groups.topk(2, dim=-1, largest=False).indices
        keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
        return keep.reshape(out, inp)
    if per_row:
        k = int(scores.shape[1] * sparsity)
        drop = scores.argsort(dim=1)[:, :k]  # argsort: topk with a large k is far slower on CPU
        return torch.ones_like(scores, dtype=torch.bool).scatter_(1, drop, False)
    k = int(scores.numel() * sparsity)
    flat = torch.ones(scores.numel(), dtype=torch.bool)
    flat[scores.flatten().argsort()[:k]] = False
    return flat.reshape(scores.shape)


def input_norms(model: nn.Module, linears: dict[str, nn.Linear], ids: list[int]) -> dict[str, torch.Tensor]:
    """L2 norm of each Linear's input channels over the calibration tokens (one dense forward pass)."""
    sums: dict[str, torch.Tensor] = {}

    def hook_for(name: str):  # type: ignore[no-untyped-def]
        def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sq = x.pow(2).sum(dim=0)
            sums[name] = sums[name] + sq if name in sums else sq
        return hook

    handles = [li.register_forward_pre_hook(hook_for(name)) for name, li in linears.items()]
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return {name: s.sqrt() for name, s in sums.items()}


def prune_model(model: nn.Module, method: str, *, sparsity: float = 0.5, structure: str = "unstructured",
                calibration_ids: list[int] | None = None) -> CompressResult:
    """Prune in place (weights zeroed, no masks left behind); returns the achieved sparsity."""
    check(method, sparsity=sparsity if structure == "unstructured" else None, structure=structure)
    if method not in PRUNE_METHODS:
        raise UnsupportedMethod(f"{method!r} is not a pruning method")
    linears = prunable_linears(model)
    norms: dict[str, torch.Tensor] = {}
    if method == "wanda":
        if not calibration_ids:
            raise ValueError("wanda needs calibration text")
        norms = input_norms(model, linears, calibration_ids)
    layer_sparsity: dict[str, float] = {}
    zeros = total = 0
    with torch.no_grad():
        for name, linear in linears.items():
            if method == "wanda":
                scores = wanda_scores(linear, norms[name])
            else:
                scores = magnitude_scores(linear)
            keep = prune_mask(scores, sparsity=sparsity, structure=structure, per_row=method == "wanda")
            linear.weight.mul_(keep.to(linear.weight.dtype))
            z = int((linear.weight == 0).sum())
            layer_sparsity[name] = round(z / linear.weight.numel(), 4)
            zeros += z
            total += linear.weight.numel()
    recipe: dict[str, object] = {"method": method, "structure": structure,
                                 "sparsity": 0.5 if structure == "2:4" else sparsity}
    if method == "wanda":
        recipe["calibration_tokens"] = len(calibration_ids or [])
    return CompressResult(method, recipe, layer_sparsity, round(zeros / max(total, 1), 4))


def cast_model(model: nn.Module, method: str) -> CompressResult:
    if method not in CAST_METHODS:
        raise UnsupportedMethod(f"{method!r} is not a cast method ({', '.join(CAST_METHODS)})")
    model.to(CAST_DTYPES[method])
    return CompressResult(method, {"method": method, "dtype": str(CAST_DTYPES[method]).removeprefix("torch.")})


def quantize_model(model: nn.Module, tokenizer: object, dest: Path, method: str, *,
                   calibration_text: str | None = None, calibration_tokens: int = 512) -> CompressResult:
    """Apply the engine's int8 mode `method` to a float model and store its int8 weights in `dest`
    (the model's own layers are consumed)."""
    from engine.quantize import FORMAT, W8A8Options, quantize_stack, save_quantized
    from engine.runner import build_stack

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    options = W8A8Options(calibration_tokens=calibration_tokens)
    stack = build_stack(model)
    used = quantize_stack(stack, method, tokenizer=tokenizer, device=torch.device("cpu"), options=options,
                          calibration_text=calibration_text)
    meta = save_quantized(stack, dest, mode=method, tied=tied)
    recipe: dict[str, object] = {"method": method, "format": FORMAT, "weights": "int8, one scale per output row",
                                 "embedding": "int8, one scale per row", "lm_head": meta["lm_head"],
                                 "activations": "float (two 7-bit passes)" if method == "int8" else
                                 "int8 per token (7-bit), SmoothQuant-scaled"}
    if method == "w8a8":
        recipe.update(smoothquant_alpha=options.alpha, calibration_tokens=used)
    return CompressResult(method, recipe)


def compress_folder(src: Path, dest: Path, method: str, *, sparsity: float = 0.5, structure: str = "unstructured",
                    calibration_text: str | None = None, calibration_tokens: int = 512) -> CompressResult:
    """Load the Hugging Face folder `src`, compress it, and write a loadable folder at `dest`
    (weights as safetensors; tokenizer and other non-weight files copied unchanged)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check(method, sparsity=sparsity if structure == "unstructured" else None, structure=structure)
    check_model(method, src)
    if method in GGUF_METHODS:
        from engine.gguf_export import export

        result = CompressResult(method, export(src, dest, method))
        _copy_other_files(src, dest)
        return result
    model = AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32)
    model.eval()
    if method in QUANT_METHODS:
        tokenizer = AutoTokenizer.from_pretrained(src)
        result = quantize_model(model, tokenizer, dest, method, calibration_text=calibration_text,
                                calibration_tokens=calibration_tokens)
    elif method in PRUNE_METHODS:
        ids = None
        if method == "wanda":
            from engine.calibration import CALIBRATION_TEXT

            tok = AutoTokenizer.from_pretrained(src)
            ids = tok(calibration_text or CALIBRATION_TEXT)["input_ids"][:calibration_tokens]
        result = prune_model(model, method, sparsity=sparsity, structure=structure, calibration_ids=ids)
        parent_dtype = _saved_dtype(src)
        if parent_dtype in ("float16", "bfloat16"):
            model.to(getattr(torch, parent_dtype))  # keep the parent's storage dtype
    else:
        result = cast_model(model, method)
    if method not in QUANT_METHODS:
        dest.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(dest, safe_serialization=True)
    _copy_other_files(src, dest)
    return result


def _copy_other_files(src: Path, dest: Path) -> None:
    """The tokenizer, config and other non-weight files, unchanged."""
    for path in src.iterdir():
        if path.is_file() and not (dest / path.name).exists() and not path.name.endswith(WEIGHT_SUFFIXES) \
                and not path.name.endswith(".index.json"):
            shutil.copy2(path, dest / path.name)


def _saved_dtype(src: Path) -> str | None:
    try:
        cfg = json.loads((src / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("torch_dtype") or cfg.get("dtype")


def folder_stats(path: Path) -> dict[str, int]:
    """Size on disk (all files) and parameter count (from the safetensors headers)."""
    from safetensors import safe_open

    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    params = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():
                params += _numel(st.get_slice(key).get_shape())
    return {"size_bytes": size, "parameters": params}


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
