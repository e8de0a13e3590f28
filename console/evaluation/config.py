"""An evaluation's `config` (the engine settings it runs under and how it measures), normalized so
that equal settings share one key, and the validation of an `evaluate` job's params."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from console.evaluation.choices import TASK_OF_KIND
from console.evaluation.params import dataset_named, dataset_version_of, fail, model_named, ready_versions
from engine.config import EngineConfig
from engine.evaluator import Settings

ENGINE_FIELDS = {f.name: f.default for f in dataclasses.fields(EngineConfig)}
# Evaluation runs beside other jobs: a smaller KV cache and batch than a serving replica's.
ENGINE_DEFAULTS = {**ENGINE_FIELDS, "kv_cache_bytes": 128 * 1024 * 1024, "max_num_seqs": 16}
SETTINGS_FIELDS = {f.name: f.default for f in dataclasses.fields(Settings)}
MAX_VERSIONS = 8


def normalize(config: Any) -> dict[str, Any]:
    """`{"engine": {...EngineConfig fields}, ...Settings fields}` complete with defaults; unknown keys
    and bad values are refused naming the field."""
    if not isinstance(config, dict):
        raise fail("config", "must be an object")
    unknown = sorted(set(config) - {"engine", *SETTINGS_FIELDS})
    if unknown:
        raise fail(f"config.{unknown[0]}", f"unknown setting; known: engine, {', '.join(SETTINGS_FIELDS)}")
    engine_in = config.get("engine", {})
    if not isinstance(engine_in, dict):
        raise fail("config.engine", "must be an object")
    for key in engine_in:
        if key not in ENGINE_FIELDS:
            raise fail(f"config.engine.{key}", f"unknown engine setting; known: {', '.join(ENGINE_FIELDS)}")
    engine = {**ENGINE_DEFAULTS, **engine_in}
    try:
        EngineConfig(**engine)
    except (TypeError, ValueError) as exc:
        name = next((k for k in engine_in if k in str(exc)), "")
        raise fail(f"config.engine.{name}" if name else "config.engine", str(exc)) from exc
    settings = {**SETTINGS_FIELDS, **{k: v for k, v in config.items() if k != "engine"}}
    try:
        Settings(**settings)
    except (TypeError, ValueError) as exc:
        name = next((k for k in config if k in str(exc)), "")
        raise fail(f"config.{name}" if name else "config", str(exc)) from exc
    return {"engine": engine, **settings}


def key_of(config: dict[str, Any]) -> str:
    """A short stable key of a normalized config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def summary(config: dict[str, Any]) -> str:
    """The settings that differ from the defaults, e.g. `quantization=int8, context_length=512`."""
    base = normalize({})
    parts = [f"{k}={v}" for k, v in config.get("engine", {}).items() if base["engine"].get(k) != v]
    parts += [f"{k}={v}" for k, v in config.items() if k != "engine" and base.get(k) != v]
    return ", ".join(parts) or "defaults"


def validate_params(params: dict[str, Any], user: Any) -> dict[str, Any]:
    """An `evaluate` job's params: a model, ready versions of it, a dataset of a kind that fits the
    model's task (its latest version unless `dataset_version` says which), and the config."""
    unknown = sorted(set(params) - {"model", "versions", "dataset", "dataset_version", "config"})
    if unknown:
        raise fail(unknown[0], "unknown parameter; an evaluation takes model, versions, dataset, "
                                "dataset_version and config")
    model = model_named(params.get("model"), "evaluate")
    numbers = params.get("versions")
    if not isinstance(numbers, list) or not numbers or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise fail("versions", "Give a non-empty list of version numbers, e.g. [1, 2].")
    numbers = sorted(set(numbers))
    if len(numbers) > MAX_VERSIONS:
        raise fail("versions", f"At most {MAX_VERSIONS} versions per evaluation; split the run.")
    ready_versions(model, numbers, "evaluated")
    dataset = dataset_named(params.get("dataset"), "evaluate")
    if TASK_OF_KIND[dataset.kind] != model.task:
        raise fail("dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset, for "
                               f"{TASK_OF_KIND[dataset.kind]} models; '{model.name}' is {model.task}.")
    dataset_version = dataset_version_of(dataset, params.get("dataset_version"))
    return {"model": model.name, "versions": numbers, "dataset": dataset.name,
            "dataset_version": dataset_version.number, "config": normalize(params.get("config", {}))}
