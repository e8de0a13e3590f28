"""Load a model folder as the registry stores it: safetensors weights, config, tokenizer.

Refuses what could run code: pickle checkpoints (*.bin, *.pt, …) and configs that point at code
shipped with the model (`auto_map`, `trust_remote_code`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import UnsafeModel, UnsupportedModel
from engine.inspect import PICKLE_SUFFIXES

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def read_config(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UnsupportedModel(f"{folder} is not a folder; pass the model folder holding config.json")
    pickles = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeModel(f"refusing pickle checkpoint files ({', '.join(pickles[:5])}): they can run code when "
                          "loaded. Save the model with `save_pretrained` (safetensors) and use that folder.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UnsupportedModel(f"{folder} has no config.json; a Hugging Face model folder is needed")
    config = json.loads(config_path.read_text())
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        data = json.loads(path.read_text()) if path.is_file() else {}
        if data.get("auto_map") or data.get("trust_remote_code"):
            raise UnsafeModel(f"{name} asks to run code shipped with the model (auto_map/trust_remote_code); "
                              "Tauon only serves architectures built into transformers")
    if not any(folder.glob("*.safetensors")):
        raise UnsupportedModel(f"{folder} holds no *.safetensors weights")
    return config


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPES[name])


def load_model(folder: Path, auto_class: str, *, device: str, dtype: str, **kwargs: Any) -> Any:
    import transformers

    read_config(folder)
    cls = getattr(transformers, auto_class)
    model = cls.from_pretrained(str(folder), dtype=torch_dtype(dtype), use_safetensors=True,
                                trust_remote_code=False, **kwargs)
    return model.to(device).eval()


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def release_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise, inflating RSS)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
