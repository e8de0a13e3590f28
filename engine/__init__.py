"""Tauon's inference engine: plain Python, PyTorch and transformers; no Django, no Celery.

    from engine import Engine, EngineConfig, SamplingParams
    llm = Engine.from_pretrained(folder, EngineConfig(max_num_seqs=16))
    for delta in llm.generate([{"role": "user", "content": "Hi"}], SamplingParams(max_new_tokens=32)):
        print(delta.text, end="")

Names load lazily so that `engine.inspect` (header parsing for the console) never pulls in torch."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Engine": "engine.api",
    "EngineConfig": "engine.config",
    "SamplingParams": "engine.config",
    "LLMEngine": "engine.llm_engine",
    "EngineStats": "engine.llm_engine",
    "EmbeddingEngine": "engine.encoders",
    "ClassificationEngine": "engine.encoders",
    "TokenClassificationEngine": "engine.encoders",
    "Completion": "engine.outputs",
    "Delta": "engine.outputs",
    "RequestHandle": "engine.outputs",
    "EngineError": "engine.errors",
    "Overloaded": "engine.errors",
    "PromptTooLong": "engine.errors",
    "InvalidPrompt": "engine.errors",
    "UnsafeModel": "engine.errors",
    "UnsupportedModel": "engine.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
