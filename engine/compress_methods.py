"""Which compression methods exist and whether one applies to a model: names and checks only, no torch.

The console validates a `compress` job with these before queueing it; `engine.compress` runs the
methods (it imports torch) and calls the same checks before loading anything."""

from __future__ import annotations

import json
from pathlib import Path

from engine.families import LLAMA_LIKE
from engine.int8_format import is_stored

PRUNE_METHODS = ("magnitude", "wanda")
CAST_METHODS = ("fp16", "bf16")
QUANT_METHODS = ("int8", "w8a8")
GGUF_METHODS = ("gguf-q8_0", "gguf-q4_0")  # engine/gguf_export.py: a GGUF child llama.cpp serves
METHODS = (*QUANT_METHODS, *GGUF_METHODS, *PRUNE_METHODS, *CAST_METHODS)
CALIBRATED = ("wanda", "w8a8")  # the methods that take calibration text
STRUCTURES = ("unstructured", "2:4")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# Architectures whose decoder blocks hold no nn.Linear (GPT-2 family: transformers' Conv1D).
CONV1D_ARCHITECTURES = frozenset({"GPT2LMHeadModel", "GPT2Model", "OpenAIGPTLMHeadModel"})


class UnsupportedMethod(ValueError):
    """The method can't be applied to this model (architecture, structure, parameters)."""


def check(method: str, *, sparsity: float | None = None, structure: str = "unstructured") -> None:
    """Raise ValueError / UnsupportedMethod for parameters that can't work, before loading anything."""
    if method not in METHODS:
        raise UnsupportedMethod(f"method {method!r} is not one of {', '.join(METHODS)}")
    if method in PRUNE_METHODS:
        if structure not in STRUCTURES:
            raise UnsupportedMethod(f"structure {structure!r} is not one of {', '.join(STRUCTURES)}")
        if structure == "unstructured":
            if sparsity is None or not 0.0 < float(sparsity) < 1.0:
                raise ValueError("sparsity must be strictly between 0 and 1")
        elif sparsity is not None and float(sparsity) != 0.5:
            raise ValueError("2:4 structure prunes exactly half (sparsity 0.5)")


def check_model(method: str, folder: Path) -> None:
    """UnsupportedMethod where `method` can't apply to the model in `folder` (read from config.json)."""
    stored = is_stored(folder)
    if stored:
        raise UnsupportedMethod(f"this version is already stored as {stored}; compress its float parent instead")
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedMethod(f"{folder} has no readable config.json") from exc
    architecture = (config.get("architectures") or ["?"])[0]
    if method in PRUNE_METHODS and architecture in CONV1D_ARCHITECTURES:
        raise UnsupportedMethod(f"{method} pruning needs nn.Linear decoder layers; {architecture} uses Conv1D. "
                                "Use fp16 or bf16 for this model.")
    if method in GGUF_METHODS:
        from engine.gguf_export import ExportError, check_exportable  # numpy and json only: no torch

        try:
            check_exportable(folder)
        except ExportError as exc:
            raise UnsupportedMethod(str(exc)) from exc
    if method in QUANT_METHODS and config.get("model_type") not in LLAMA_LIKE:
        raise UnsupportedMethod(f"{method} is stored in the engine's int8 format, which covers Llama-family models "
                                f"({', '.join(LLAMA_LIKE)}); this model is {config.get('model_type')!r}. "
                                "Use fp16 or bf16, or serve it with quantization set in the deployment's engine config.")
