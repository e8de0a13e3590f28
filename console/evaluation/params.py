"""The part of a job's params that the kinds working on a registered model and a dataset share
(evaluate, finetune, compress): the model by name, ready versions of it, the dataset by name and one
of its versions (the latest unless a number says which). Each lookup refuses bad input with a
ValidationError naming the field, so POST /api/jobs/ answers 400 before any job exists."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError

from console.evaluation.models import Dataset, DatasetVersion
from console.registry.choices import VersionStatus
from console.registry.models import Model, ModelVersion


def fail(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def model_named(name: Any, verb: str) -> Model:
    """The model called `name`; `verb` says what the job does to it ("evaluate", "fine-tune")."""
    model = Model.objects.filter(name=name).first() if isinstance(name, str) else None
    if model is None:
        raise fail("model", f"No model named {name!r}." if name else f"Name the model to {verb}.")
    return model


def ready_versions(model: Model, numbers: list[int], done: str, field: str = "versions") -> dict[int, ModelVersion]:
    """Version number → version, each of them existing and ready; `done` as in "only ready versions can
    be evaluated"."""
    found = {v.number: v for v in model.versions.filter(number__in=numbers)}
    for n in numbers:
        if n not in found:
            raise fail(field, f"Model '{model.name}' has no version {n}.")
        if found[n].status != VersionStatus.READY:
            raise fail(field, f"Version {n} is '{found[n].status}'; only ready versions can be {done}.")
    return found


def ready_version(model: Model, number: Any, verb: str, done: str) -> ModelVersion:
    """The one ready version `number` (params field `version`)."""
    if not _is_number(number):
        raise fail("version", f"Give the version number to {verb}, e.g. 1.")
    return ready_versions(model, [number], done, field="version")[number]


def dataset_named(name: Any, verb: str, field: str = "dataset") -> Dataset:
    """The dataset called `name` (params field `field`); `verb` as in "Name the dataset to train on"."""
    dataset = Dataset.objects.filter(name=name).first() if isinstance(name, str) else None
    if dataset is None:
        raise fail(field, f"No dataset named {name!r}; see /api/datasets/." if name
                   else f"Name the dataset to {verb} on.")
    return dataset


def dataset_version_of(dataset: Dataset, number: Any, field: str = "dataset_version") -> DatasetVersion:
    """Version `number` of the dataset (params field `field`), its latest when None."""
    if number is not None and not _is_number(number):
        raise fail(field, "Give the dataset version as a number (or leave it out for the latest).")
    version = dataset.latest if number is None else dataset.versions.filter(number=number).first()
    if version is None:
        raise fail(field, f"Dataset '{dataset.name}' has no version {number}." if number is not None
                   else f"Dataset '{dataset.name}' has no versions yet; upload one.")
    return version
