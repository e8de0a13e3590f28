"""Engine and per-request settings: plain dataclasses, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = ("none", "int8", "w8a8", "int4")
DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("auto", "torch", "llamacpp")  # see engine/api.py: auto → llamacpp for a version with a GGUF


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(slots=True)
class EngineConfig:
    """How one engine replica runs. `kv_cache_bytes` is preallocated once and shared by all
    sequences in blocks of `block_size` tokens; `max_queue` bounds the waiting requests."""

    device: str = "auto"  # auto → cuda when available, else cpu
    dtype: str = "auto"  # auto → float32 on cpu, bfloat16 on cuda
    quantization: str = "none"  # none | int8 (weight-only) | w8a8 (int8 weights+activations) | int4 (cuda)
    max_num_seqs: int = 32  # sequences decoded together
    max_batch_tokens: int = 256  # tokens computed in one step: decodes plus prefill chunks (bounds the gap between tokens)
    kv_cache_bytes: int = 512 * 1024 * 1024
    block_size: int = 16  # tokens per KV block
    max_queue: int = 256  # waiting requests before `Overloaded`
    max_model_len: int = 0  # 0 → the model's max_position_embeddings (capped at 8192)
    seed: int = 0  # seeds requests that give no seed of their own, per request in order
    runtime: str = "auto"  # auto | torch | llamacpp (llama.cpp on the version's GGUF file)
    threads: int = 0  # llamacpp: CPU threads; 0 → the physical cores this process may use, less one
    # (engine.llamacpp.default_threads says why)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 0:
            raise ValueError(f"threads must be 0 (the runtime picks: the physical cores this worker may use, less "
                             f"one) or a positive integer, got {self.threads!r}")
        for name in ("max_num_seqs", "max_batch_tokens", "kv_cache_bytes", "block_size", "max_queue"):
            _positive(name, getattr(self, name))
        if not isinstance(self.max_model_len, int) or self.max_model_len < 0:
            raise ValueError(f"max_model_len must be 0 (use the model's) or a positive integer, got {self.max_model_len!r}")

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self, device: str) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if device == "cuda" else "float32"


@dataclass(slots=True)
class SamplingParams:
    """Per-request sampling. temperature 0 means greedy. Penalties follow the usual meanings:
    `repetition_penalty` (Hugging Face style, > 1 discourages every token already in prompt or
    output), `presence_penalty`/`frequency_penalty` (OpenAI style, on generated tokens)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 → off
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives per token, 0..20
    fit_context: bool = False  # max_new_tokens is a default: shrink it to the context left instead of refusing
    priority: int = 0  # 0 interactive; higher is background (batch): admitted after, preempted first

    def __post_init__(self) -> None:
        _positive("max_new_tokens", self.max_new_tokens)
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be between 0 and 100, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or a positive integer, got {self.top_k!r}")
        if self.repetition_penalty <= 0.0:
            raise ValueError(f"repetition_penalty must be > 0 (1 is off), got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be between -2 and 2, got {getattr(self, name)}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a list of non-empty strings")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise ValueError("stop_token_ids must be non-negative integers")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be between 0 and 20, got {self.top_logprobs}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int) or not 0 <= self.priority <= 9:
            raise ValueError(f"priority must be an integer from 0 (interactive) to 9, got {self.priority!r}")
        if self.top_logprobs and not self.logprobs:
            self.logprobs = True

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def plain(self) -> bool:
        """Greedy without penalties: one argmax over the batch does it."""
        return (self.greedy and self.repetition_penalty == 1.0 and self.presence_penalty == 0.0
                and self.frequency_penalty == 0.0)
