"""The model families the torch runner's fused stack covers, by `config.json`'s `model_type`.

Torch-free, so the console can check a model against it without loading the runner."""

from __future__ import annotations

LLAMA_LIKE = ("llama", "mistral", "qwen2")
