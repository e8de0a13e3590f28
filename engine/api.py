"""`Engine.from_pretrained(folder, config)`: the engine that fits the folder's model.

Causal LMs get a runtime (`config.runtime`, chosen here and nowhere else): `llamacpp` serves the
version's GGUF file on llama.cpp (engine/llamacpp.py), `torch` the safetensors weights on our own
`LLMEngine`; `auto` picks llama.cpp for a version that kept a GGUF (unless a torch quantization is
asked for) and falls back to torch, saying why, when llama.cpp cannot run it. Both honour one
contract: `generate` → `RequestHandle`, `encode`, `tokenizer`, `eos_ids`, `stats()`, `close()`, and
`runtime` / `runtime_note` name the choice. Encoders get the embedding, sequence-classification or
token-classification engine their architecture or task names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import loader
from engine.config import EngineConfig
from engine.errors import UnsupportedModel

TASKS = ("text-generation", "embeddings", "text-classification", "token-classification")


def task_of(folder: Path, config: dict[str, Any]) -> str:
    archs = config.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return "text-generation"
    if arch.endswith("ForSequenceClassification"):
        return "text-classification"
    if arch.endswith("ForTokenClassification"):
        return "token-classification"
    if (folder / "modules.json").is_file() or arch.endswith("Model"):
        return "embeddings"
    raise UnsupportedModel(f"cannot tell what task architecture {arch or '(none)'} serves; name the task")


class Engine:
    @staticmethod
    def from_pretrained(folder: str | Path, config: EngineConfig | None = None, *, task: str | None = None) -> Any:
        folder = Path(folder)
        cfg = loader.read_config(folder)
        task = task or task_of(folder, cfg)
        runtime = config.runtime if config is not None else "auto"
        if task == "text-generation":
            return _causal_lm(folder, config or EngineConfig(), runtime)
        if runtime == "llamacpp":
            raise UnsupportedModel(f"the llamacpp runtime serves text generation only, not {task}; "
                                   "use runtime 'auto' or 'torch'")
        from engine import encoders

        if task == "embeddings":
            return encoders.EmbeddingEngine(folder, config)
        if task == "text-classification":
            return encoders.ClassificationEngine(folder, config)
        if task == "token-classification":
            return encoders.TokenClassificationEngine(folder, config)
        raise UnsupportedModel(f"unknown task {task!r}; one of {', '.join(TASKS)}")


def runtime_of(folder: str | Path, config: EngineConfig | None = None) -> str:
    """The runtime `Engine.from_pretrained(folder, config)` picks for a causal LM, without loading it:
    `llamacpp` for an explicit llamacpp, or for `auto` on a version that kept its GGUF (no torch
    quantization asked); else `torch`. (`auto` can still fall back to torch at load, when llama.cpp
    cannot run the file; the loaded engine's `runtime` says what ran.)"""
    config = config or EngineConfig()
    if config.runtime == "torch":
        return "torch"
    if config.runtime == "llamacpp":
        return "llamacpp"
    from engine.llamacpp import gguf_of

    return "llamacpp" if gguf_of(Path(folder)) is not None and config.quantization == "none" else "torch"


def _causal_lm(folder: Path, config: EngineConfig, runtime: str) -> Any:
    note = ""
    if runtime != "torch":
        from engine import llamacpp

        gguf = llamacpp.gguf_of(folder)
        if runtime == "llamacpp" or (gguf is not None and config.quantization == "none"):
            try:
                engine = llamacpp.LlamaCppEngine(folder, config, gguf_path=gguf)
                where = "all layers on the GPU" if engine.gpu_layers else (
                    f"{engine.threads} thread{'s' if engine.threads != 1 else ''}")
                engine.runtime_note = f"llama.cpp (the GGUF file, {engine.architecture}, {where})"
                return engine
            except (UnsupportedModel, ImportError) as exc:
                if runtime == "llamacpp":
                    raise UnsupportedModel(str(exc)) from exc
                note = f"torch (runtime auto fell back to it: {exc})"
    from engine.llm_engine import LLMEngine

    engine = LLMEngine.from_pretrained(folder, config)
    engine.runtime = "torch"
    engine.runtime_note = note or "torch (the safetensors weights)"
    return engine
