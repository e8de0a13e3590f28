"""A deployment's `config`: the engine settings of each replica, the caps every request is checked
against, and the sampling defaults requests start from. Stored normalized (defaults filled in)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rest_framework.exceptions import ValidationError

from engine.config import DEVICES, DTYPES, QUANTIZATIONS, RUNTIMES, EngineConfig

ENGINE_FIELDS = {f.name: f.default for f in dataclasses.fields(EngineConfig)}
LIMITS = {  # name: (default, low, high)
    "max_tokens": (512, 1, 32768),  # cap on max_tokens per request
    "max_n": (4, 1, 16),  # cap on n (choices per request)
    "max_input_items": (256, 1, 4096),  # texts per embeddings / predict request
    "timeout_s": (120, 1, 3600),  # every request ends by then
    "ttft_target_ms": (0, 0, 600_000),  # adaptive admission keeps p99 TTFT under it (0: off; engine/latency_governor.py)
}
SAMPLING = {  # the defaults a request starts from
    "temperature": 0.7,
    "top_p": 1.0,
    "max_tokens": 128,
}


def _schema() -> dict[str, Any]:
    """The OpenAPI schema of what `normalize` accepts (a cap between two keys is beyond it: sampling.max_tokens
    must also stay within max_tokens)."""
    positive = {"type": "integer", "minimum": 1}
    engine = {"device": {"type": "string", "enum": list(DEVICES)}, "dtype": {"type": "string", "enum": list(DTYPES)},
              "quantization": {"type": "string", "enum": list(QUANTIZATIONS)},
              **{name: positive for name in ("max_num_seqs", "max_batch_tokens", "kv_cache_bytes", "block_size",
                                             "max_queue")},
              "max_model_len": {"type": "integer", "minimum": 0}, "seed": {"type": "integer"},
              "runtime": {"type": "string", "enum": list(RUNTIMES)}, "threads": {"type": "integer", "minimum": 0}}
    assert set(engine) == set(ENGINE_FIELDS), "every engine setting has a schema"
    sampling = {"temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0.001, "maximum": 1},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": LIMITS["max_tokens"][2]}}
    return {"type": "object", "additionalProperties": False, "properties": {
        "engine": {"type": "object", "additionalProperties": False, "properties": engine},
        "sampling": {"type": "object", "additionalProperties": False, "properties": sampling},
        **{key: {"type": "integer", "minimum": low, "maximum": high} for key, (_, low, high) in LIMITS.items()},
    }}


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError({f"config.{field}": [message]})


def _number(field: str, value: Any, low: float, high: float, *, integer: bool) -> int | float:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise _fail(field, f"must be {kind} between {low} and {high}, got {value!r}")
    return value


def _section(config: dict[str, Any], name: str, known: dict[str, Any], what: str) -> dict[str, Any]:
    """The object `config[name]` (empty when absent), refusing keys not in `known`."""
    section = config.get(name, {})
    if not isinstance(section, dict):
        raise _fail(name, "must be an object")
    for key in section:
        if key not in known:
            raise _fail(f"{name}.{key}", f"unknown {what}; known: {', '.join(known)}")
    return section


SCHEMA = _schema()


def normalize(config: Any, *, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check `config` and return it complete. Keys left out keep their `previous` value (on edit) or
    the default. Unknown keys are refused so that typos don't pass silently."""
    if not isinstance(config, dict):
        raise ValidationError({"config": ["must be an object"]})
    base = previous or {}
    unknown = set(config) - {"engine", "sampling", *LIMITS}
    if unknown:
        raise _fail(sorted(unknown)[0], f"unknown setting; known: engine, sampling, {', '.join(LIMITS)}")
    out: dict[str, Any] = {}

    engine_in = _section(config, "engine", ENGINE_FIELDS, "engine setting")
    engine = {**ENGINE_FIELDS, **base.get("engine", {}), **engine_in}
    if "seed" in engine_in:
        _number("engine.seed", engine_in["seed"], -(2**63), 2**63 - 1, integer=True)
    try:
        EngineConfig(**engine)
    except (TypeError, ValueError) as exc:
        name = next((k for k in engine_in if k in str(exc)), "")
        raise _fail(f"engine.{name}" if name else "engine", str(exc)) from exc
    out["engine"] = engine

    for key, (default, low, high) in LIMITS.items():
        value = config.get(key, base.get(key, default))
        out[key] = _number(key, value, low, high, integer=True)

    sampling_in = _section(config, "sampling", SAMPLING, "sampling default")
    sampling = {**SAMPLING, **base.get("sampling", {}), **sampling_in}
    if "max_tokens" not in sampling_in:
        sampling["max_tokens"] = min(sampling["max_tokens"], out["max_tokens"])  # a default under a lower cap
    _number("sampling.temperature", sampling["temperature"], 0, 2, integer=False)
    _number("sampling.top_p", sampling["top_p"], 0.001, 1, integer=False)
    _number("sampling.max_tokens", sampling["max_tokens"], 1, out["max_tokens"], integer=True)
    out["sampling"] = sampling
    return out


def check_runtime(config: dict[str, Any], version: Any, task: str) -> None:
    """An explicit `llamacpp` runtime needs a text-generation version that kept a GGUF file of an
    architecture llama.cpp runs (`auto` falls back to torch instead; the replica says so)."""
    from engine.errors import UnsupportedModel
    from engine.inspect import GGUF_NAME
    from engine.llamacpp import check_runnable

    if config["engine"].get("runtime") != "llamacpp":
        return
    if task != "text-generation":
        raise _fail("engine.runtime", f"the llamacpp runtime serves text generation only, not {task}; use 'auto' "
                                      "or 'torch'")
    if version is None:
        return
    gguf = Path(version.path) / GGUF_NAME
    if not gguf.is_file():
        raise _fail("engine.runtime", f"version {version.number} has no GGUF file (it was not imported from one); "
                                      "the llamacpp runtime serves GGUF versions only: use 'auto' or 'torch'")
    try:
        check_runnable(gguf)
    except UnsupportedModel as exc:
        raise _fail("engine.runtime", f"version {version.number}: {exc}") from exc


def engine_config(config: dict[str, Any]) -> EngineConfig:
    return EngineConfig(**config["engine"])


def capacity(config: dict[str, Any]) -> int:
    """Requests one replica takes at once: its running batch plus its waiting queue."""
    engine = config["engine"]
    return int(engine["max_num_seqs"]) + int(engine["max_queue"])

