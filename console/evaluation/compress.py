"""The `compress` job's params: a ready text-generation version, a method engine.compress supports for
its architecture (and not a version already stored as int8), pruning parameters, a text dataset to
calibrate Wanda or w8a8 on, and optionally a dataset (and evaluation config) to compare parent and
child on. Each dataset's version is pinned here, at submission (the one given, else the latest now), so
a version added while the job waits or runs is not used and a re-run reads the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from console.evaluation.choices import TASK_OF_KIND, DatasetKind
from console.evaluation.config import normalize
from console.evaluation.params import dataset_named, dataset_version_of, model_named, ready_version
from console.evaluation.params import fail as _fail
from engine import compress_methods as compress

PARAMS = ("model", "version", "method", "sparsity", "structure", "calibration_dataset",
          "calibration_dataset_version", "dataset", "dataset_version", "config")


def _dataset(field: str, params: dict[str, Any]) -> tuple[Any, int]:
    """The dataset named by params[field] and the number of its version params[field + "_version"] (the
    latest when not given)."""
    dataset = dataset_named(params[field], "calibrate" if field == "calibration_dataset" else "evaluate", field=field)
    return dataset, dataset_version_of(dataset, params.get(f"{field}_version"), field=f"{field}_version").number


def validate_params(params: dict[str, Any], user: Any) -> dict[str, Any]:
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise _fail(unknown[0], f"unknown parameter; a compression takes {', '.join(PARAMS)}")
    model = model_named(params.get("model"), "compress")
    version = ready_version(model, params.get("version"), "compress", "compressed")
    number = version.number
    if model.task != "text-generation":
        raise _fail("model", f"'{model.name}' is {model.task}; compression supports text-generation models.")
    method = params.get("method")
    if method not in compress.METHODS:
        raise _fail("method", f"{method!r} is not a compression method; choose one of: {', '.join(compress.METHODS)}.")
    structure = params.get("structure", "unstructured")
    sparsity = params.get("sparsity", 0.5)
    cleaned: dict[str, Any] = {"model": model.name, "version": number, "method": method}
    try:
        compress.check_model(method, Path(version.path))
    except compress.UnsupportedMethod as exc:
        raise _fail("method", str(exc)) from exc
    if method in compress.PRUNE_METHODS:
        if not isinstance(sparsity, int | float) or isinstance(sparsity, bool):
            raise _fail("sparsity", "Give the sparsity as a number strictly between 0 and 1, e.g. 0.5.")
        try:
            compress.check(method, sparsity=sparsity if structure == "unstructured" else None, structure=structure)
        except compress.UnsupportedMethod as exc:
            raise _fail("structure", str(exc)) from exc
        except ValueError as exc:
            raise _fail("sparsity", str(exc)) from exc
        cleaned.update(sparsity=0.5 if structure == "2:4" else float(sparsity), structure=structure)
    elif "sparsity" in params or "structure" in params:
        raise _fail("sparsity" if "sparsity" in params else "structure", f"{method} takes no sparsity or structure.")
    calibration = params.get("calibration_dataset")
    if calibration is not None:
        if method not in compress.CALIBRATED:
            raise _fail("calibration_dataset", f"{method} needs no calibration; only "
                                               f"{' and '.join(compress.CALIBRATED)} do.")
        dataset, pinned = _dataset("calibration_dataset", params)
        if dataset.kind != DatasetKind.TEXT:
            raise _fail("calibration_dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset; calibration "
                                               "takes plain text (a text dataset).")
        cleaned.update(calibration_dataset=dataset.name, calibration_dataset_version=pinned)
    elif "calibration_dataset_version" in params:
        raise _fail("calibration_dataset_version", "A calibration dataset version needs a calibration_dataset.")
    if params.get("dataset") is not None:
        dataset, pinned = _dataset("dataset", params)
        if TASK_OF_KIND[dataset.kind] != model.task:
            raise _fail("dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset, for "
                                   f"{TASK_OF_KIND[dataset.kind]} models; '{model.name}' is {model.task}.")
        cleaned.update(dataset=dataset.name, dataset_version=pinned)
        cleaned["config"] = normalize(params.get("config", {}))
        if "split" in cleaned["config"]:
            raise _fail("config.split", "A compression compares parent and child on the whole dataset; drop the split.")
    elif "config" in params:
        raise _fail("config", "An evaluation config needs a dataset to evaluate on.")
    elif "dataset_version" in params:
        raise _fail("dataset_version", "A dataset version needs a dataset to evaluate on.")
    return cleaned
