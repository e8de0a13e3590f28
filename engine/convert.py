"""GGUF → a safetensors Hugging Face folder, done once at import so later loads are plain
`from_pretrained(folder)` calls (about 0.3 s for a 135M model instead of ~36 s of dequantizing
and rebuilding the tokenizer from GGUF metadata every time)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The task decides which head the weights are loaded into; GGUF files are almost always LLMs.
AUTO_CLASSES = {
    "text-generation": "AutoModelForCausalLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "embeddings": "AutoModel",
}


class ConversionError(RuntimeError):
    """transformers could not read the GGUF file; the message says why."""


@contextmanager
def _parse_gguf_once() -> Iterator[None]:
    """transformers parses the GGUF file three times (config, weights, tokenizer), each a pure-Python
    walk of the whole vocabulary, and rebuilds gguf's tensor-name map once per module. Serve repeats
    from a cache while converting; both are read-only. If transformers stops going through these
    module attributes, the conversion just runs at its uncached speed."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def cached_reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = cached_reader, functools.lru_cache(maxsize=None)(name_map)  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map  # type: ignore[misc]


def gguf_to_safetensors(gguf_path: Path, out_dir: Path, *, task: str = "text-generation") -> Path:
    """Dequantize `gguf_path` with transformers and write config, float weights (safetensors),
    tokenizer and chat template to `out_dir`. Returns out_dir."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    auto = getattr(transformers, AUTO_CLASSES.get(task, "AutoModelForCausalLM"))
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with _parse_gguf_once():
            model = auto.from_pretrained(folder, gguf_file=name)
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, OSError, NotImplementedError) as exc:
        raise ConversionError(f"transformers cannot convert this GGUF file: {exc}") from exc
    # The weights are dequantized floats now; without this the saved config would claim GGUF
    # quantization and every later load would look for a .gguf file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
