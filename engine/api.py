"""`Engine.from_pretrained(folder, config)`: the engine that fits the folder's model.

Causal LMs get an `LLMEngine` (continuous batching, streaming); encoders get the embedding,
sequence-classification or token-classification engine their architecture or task names."""

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
        if task == "text-generation":
            from engine.llm_engine import LLMEngine

            return LLMEngine.from_pretrained(folder, config)
        from engine import encoders

        if task == "embeddings":
            return encoders.EmbeddingEngine(folder, config)
        if task == "text-classification":
            return encoders.ClassificationEngine(folder, config)
        if task == "token-classification":
            return encoders.TokenClassificationEngine(folder, config)
        raise UnsupportedModel(f"unknown task {task!r}; one of {', '.join(TASKS)}")
