"""An evaluation's `config` (the engine settings it runs under, how it measures, and optionally which
rows: `"split": {"name": "held-out", "seed": s, "eval_fraction": f}` is the hold-out a fine-tuning with
that seed and fraction kept out of training, engine.finetune.split), normalized so that equal settings
share one key, and the validation of an `evaluate` job's params."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from console.evaluation.choices import TASK_OF_KIND
from console.evaluation.models import key_of as key_of  # re-exported: defined beside config_key
from console.evaluation.params import dataset_named, dataset_version_of, fail, model_named, ready_versions
from engine.config import EngineConfig
from engine.evaluator import Settings
from engine.finetune import context_length
from engine.finetune import split as split_rows

ENGINE_FIELDS = {f.name: f.default for f in dataclasses.fields(EngineConfig)}
# Evaluation runs beside other jobs: a smaller KV cache and batch than a serving replica's.
ENGINE_DEFAULTS = {**ENGINE_FIELDS, "kv_cache_bytes": 128 * 1024 * 1024, "max_num_seqs": 16}
SETTINGS_FIELDS = {f.name: f.default for f in dataclasses.fields(Settings)}
MAX_VERSIONS = 8
SPLITS = ("held-out",)
SPLIT_EXAMPLE = '{"name": "held-out", "seed": 0, "eval_fraction": 0.1}'


def normalize(config: Any) -> dict[str, Any]:
    """`{"engine": {...EngineConfig fields}, ...Settings fields}` complete with defaults, plus `split` when
    one is given (absent otherwise, so a whole-dataset config keeps its key); unknown keys and bad values
    are refused naming the field."""
    if not isinstance(config, dict):
        raise fail("config", "must be an object")
    unknown = sorted(set(config) - {"engine", "split", *SETTINGS_FIELDS})
    if unknown:
        raise fail(f"config.{unknown[0]}", f"unknown setting {unknown[0]!r}; known: engine, split, "
                                            f"{', '.join(SETTINGS_FIELDS)}")
    engine_in = config.get("engine", {})
    if not isinstance(engine_in, dict):
        raise fail("config.engine", "must be an object")
    for key in engine_in:
        if key not in ENGINE_FIELDS:
            raise fail(f"config.engine.{key}", f"unknown engine setting {key!r}; known: {', '.join(ENGINE_FIELDS)}")
    engine = {**ENGINE_DEFAULTS, **engine_in}
    try:
        EngineConfig(**engine)
    except (TypeError, ValueError) as exc:
        name = next((k for k in engine_in if k in str(exc)), "")
        raise fail(f"config.engine.{name}" if name else "config.engine", str(exc)) from exc
    settings = {**SETTINGS_FIELDS, **{k: v for k, v in config.items() if k not in ("engine", "split")}}
    try:
        Settings(**settings)
    except (TypeError, ValueError) as exc:
        name = next((k for k in config if k in str(exc)), "")
        raise fail(f"config.{name}" if name else "config", str(exc)) from exc
    if "split" in config:
        return {"engine": engine, **settings, "split": _split(config["split"])}
    return {"engine": engine, **settings}


def _split(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail("config.split", f"must be an object, e.g. {SPLIT_EXAMPLE}")
    unknown = sorted(set(value) - {"name", "seed", "eval_fraction"})
    if unknown:
        raise fail(f"config.split.{unknown[0]}", "unknown key; a split has name, seed and eval_fraction")
    name, seed, fraction = value.get("name", "held-out"), value.get("seed", 0), value.get("eval_fraction")
    if name not in SPLITS:
        raise fail("config.split.name", f"{name!r} is not a split; known: {', '.join(SPLITS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise fail("config.split.seed", "Give the seed as a non-negative integer (the fine-tuning's seed).")
    if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise fail("config.split.eval_fraction", "Give the held-out fraction as a number strictly between 0 and 1 "
                                                 "(the fine-tuning's eval_fraction).")
    return {"name": name, "seed": seed, "eval_fraction": float(fraction)}


def held_out(seed: int, eval_fraction: float, **settings: Any) -> dict[str, Any]:
    """The normalized config of an evaluation on the rows a fine-tuning with this seed and
    eval_fraction held out (Settings fields as given, else the defaults)."""
    return normalize({**settings, "split": {"name": "held-out", "seed": seed, "eval_fraction": eval_fraction}})


def rows_of(config: dict[str, Any], data: Any) -> Any:
    """The part of a dataset's loaded `data` that a normalized config evaluates: all of it, or the
    rows its split names (the same rows, in the same order, that the fine-tuning held out)."""
    spec = config.get("split")
    if spec is None:
        return data
    if isinstance(data, str):
        raise ValueError("a text dataset has no rows to split; evaluate it whole")
    return split_rows(data, spec["eval_fraction"], spec["seed"])[1]


def settings_of(config: dict[str, Any]) -> Settings:
    """engine.evaluator.Settings of a normalized config."""
    return Settings(**{k: v for k, v in config.items() if k not in ("engine", "split")})


def summary(config: dict[str, Any]) -> str:
    """The settings that differ from the defaults, e.g. `quantization=int8, context_length=512`."""
    base = normalize({})
    parts = [f"{k}={v}" for k, v in config.get("engine", {}).items() if base["engine"].get(k) != v]
    parts += [f"{k}={v}" for k, v in config.items() if k not in ("engine", "split") and base.get(k) != v]
    if spec := config.get("split"):
        parts.append(f"{spec['name']} split (seed {spec['seed']}, eval_fraction {spec['eval_fraction']:g})")
    return ", ".join(parts) or "defaults"


def _check_context(given: Any, versions: Any) -> None:
    """context_length within each version's own context (max_position_embeddings), and max_model_len too: the
    values the caller gave (a default longer than a small model's context is fitted to it when the job runs)."""
    given = given if isinstance(given, dict) else {}
    engine = given.get("engine") if isinstance(given.get("engine"), dict) else {}
    for key, value in (("context_length", given.get("context_length")),
                       ("engine.max_model_len", engine.get("max_model_len"))):
        if not value:
            continue
        for version in versions:
            try:
                limit = context_length(Path(version.path))
            except (OSError, ValueError):
                continue  # no readable config.json (e.g. an embeddings layout): the engine caps it
            if limit and value > limit:
                raise fail(f"config.{key}", f"{key} {value} is longer than the context of version {version.number} "
                                            f"({limit} tokens); give at most {limit}.")


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
    versions = ready_versions(model, numbers, "evaluated")
    dataset = dataset_named(params.get("dataset"), "evaluate")
    if TASK_OF_KIND[dataset.kind] != model.task:
        raise fail("dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset, for "
                               f"{TASK_OF_KIND[dataset.kind]} models; '{model.name}' is {model.task}.")
    dataset_version = dataset_version_of(dataset, params.get("dataset_version"))
    config = normalize(params.get("config", {}))
    _check_context(params.get("config", {}), versions.values())
    if "split" in config and dataset.kind == "text":
        raise fail("config.split", f"Dataset '{dataset.name}' is plain text, which has no rows to hold out; "
                                   "drop the split to evaluate it whole.")
    return {"model": model.name, "versions": numbers, "dataset": dataset.name,
            "dataset_version": dataset_version.number, "config": config}
