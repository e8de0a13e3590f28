"""The `compress` job's params: a ready text-generation version, a method engine.compress supports for
its architecture, pruning parameters, a text dataset for Wanda's calibration, and optionally a
dataset (and evaluation config) to compare parent and child on."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError

from console.evaluation.choices import TASK_OF_KIND, DatasetKind
from console.evaluation.config import normalize
from console.evaluation.params import model_named, ready_version

PARAMS = ("model", "version", "method", "sparsity", "structure", "calibration_dataset", "dataset", "config")


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def _dataset(field: str, name: Any) -> Any:
    from console.evaluation.models import Dataset

    dataset = Dataset.objects.filter(name=name).first() if isinstance(name, str) else None
    if dataset is None or dataset.latest is None:
        raise _fail(field, f"No dataset named {name!r}; see /api/datasets/.")
    return dataset


def validate_params(params: dict[str, Any], user: Any) -> dict[str, Any]:
    from engine import compress

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
    if method in compress.PRUNE_METHODS:
        if version.architecture in compress.CONV1D_ARCHITECTURES:
            raise _fail("method", f"{method} pruning needs nn.Linear decoder layers; {version.architecture} uses "
                                  "Conv1D. Use fp16 or bf16 for this model.")
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
        if method != "wanda":
            raise _fail("calibration_dataset", f"{method} needs no calibration; only wanda does.")
        dataset = _dataset("calibration_dataset", calibration)
        if dataset.kind != DatasetKind.TEXT:
            raise _fail("calibration_dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset; calibration "
                                               "takes plain text (a text dataset).")
        cleaned["calibration_dataset"] = dataset.name
    if params.get("dataset") is not None:
        dataset = _dataset("dataset", params["dataset"])
        if TASK_OF_KIND[dataset.kind] != model.task:
            raise _fail("dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset, for "
                                   f"{TASK_OF_KIND[dataset.kind]} models; '{model.name}' is {model.task}.")
        cleaned["dataset"] = dataset.name
        cleaned["config"] = normalize(params.get("config", {}))
    elif "config" in params:
        raise _fail("config", "An evaluation config needs a dataset to evaluate on.")
    return cleaned
