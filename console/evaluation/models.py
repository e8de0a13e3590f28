"""Evaluation datasets (versioned and hashed like models), results per (version, dataset version,
config), and promotion gates. State changes are methods here, each with its audit record."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction

from console.audit.models import record
from console.evaluation import datasets
from console.evaluation.choices import GATE_METRICS, METRICS, DatasetKind, plain


class DatasetRefused(Exception):
    """An upload that cannot become a dataset version; says why and which field to fix."""

    def __init__(self, message: str, *, field: str | None = "file", code: str = "invalid", status: int = 400):
        super().__init__(message)
        self.message, self.field, self.code, self.status = message, field, code, status


class Dataset(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=DatasetKind.choices)
    description = models.TextField(blank=True)
    builtin = models.BooleanField(default=False)  # written by the project, imported by `import_datasets`
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def latest(self) -> DatasetVersion | None:
        return self.versions.order_by("-number").first()


class DatasetVersion(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    format = models.CharField(max_length=8)  # txt | jsonl | csv
    file_name = models.CharField(max_length=200, blank=True)  # as uploaded, for display only
    storage_key = models.CharField(max_length=64, unique=True, editable=False)  # generated folder name
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    examples = models.PositiveIntegerField()  # examples, or paragraphs of a text
    stats = models.JSONField(default=dict, blank=True)  # labels, entity types, words…
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset__name", "-number"]
        constraints = [models.UniqueConstraint(fields=["dataset", "number"], name="unique_dataset_version")]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def path(self) -> Path:
        """The stored file; folder and file names are generated, never client-chosen."""
        return Path(settings.TAUON_STORAGE) / "datasets" / self.storage_key / f"data.{self.format}"

    def load(self) -> Any:
        """The parsed data (a str for text, else the examples), after checking the file's hash."""
        raw = self.path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise ValueError(f"The stored file of dataset {self} no longer matches its sha256; re-upload it.")
        data, _ = datasets.parse(self.dataset.kind, self.format, raw)
        return data

    def head(self, lines: int = 8, width: int = 300) -> list[str]:
        """The first lines of the file, for the dataset page."""
        with self.path.open(encoding="utf-8-sig", errors="replace") as f:
            return [line.rstrip("\n")[:width] for _, line in zip(range(lines), f, strict=False)]

    @classmethod
    def add(cls, name: str, kind: str, filename: str, raw: bytes, actor: Any, *, description: str = "",
            builtin: bool = False) -> DatasetVersion:
        """Validate `raw` as a `kind` dataset and store it as the next version of dataset `name`
        (registering the dataset on its first version). Raises DatasetRefused."""
        limit = settings.TAUON_MAX_DATASET_BYTES
        if len(raw) > limit:
            raise DatasetRefused(f"The file is {len(raw)} bytes; datasets may be at most {limit} bytes "
                                 "(an admin can raise the limit); split it into smaller files.", code="too_large", status=413)
        if kind not in DatasetKind.values:
            raise DatasetRefused(f"'{kind}' is not a dataset kind; choose one of: {', '.join(DatasetKind.values)}.",
                                 field="kind")
        try:
            fmt = datasets.format_of(kind, filename)
            _, stats = datasets.parse(kind, fmt, raw)
        except datasets.DatasetInvalid as exc:
            raise DatasetRefused(str(exc)) from exc
        sha256 = hashlib.sha256(raw).hexdigest()
        key = uuid.uuid4().hex
        folder = Path(settings.TAUON_STORAGE) / "datasets" / key
        user = actor if getattr(actor, "is_authenticated", False) else None
        try:
            with transaction.atomic():
                dataset, created = Dataset.objects.select_for_update().get_or_create(
                    name=name, defaults={"kind": kind, "description": description, "builtin": builtin,
                                         "created_by": user})
                if dataset.kind != kind:
                    raise DatasetRefused(f"Dataset '{name}' is a {dataset.kind} dataset; a new version must be "
                                         f"{dataset.kind} too (or choose another name).", field="kind")
                latest = dataset.latest
                if latest and latest.sha256 == sha256:
                    raise DatasetRefused(f"This file is identical to {latest} (same sha256); nothing to add.",
                                         code="duplicate", status=409)
                version = cls.objects.create(
                    dataset=dataset, number=(latest.number + 1) if latest else 1, format=fmt,
                    file_name=filename[-200:], storage_key=key, sha256=sha256, size=len(raw),
                    examples=stats.pop("examples"), stats=stats, created_by=user)
                folder.mkdir(parents=True)
                version.path.write_bytes(raw)
                record(actor, "dataset.version.create", version, dataset=name, kind=kind, number=version.number,
                       sha256=sha256, size=len(raw), examples=version.examples, created=created)
        except IntegrityError as exc:  # lost a race with another first upload under this name
            shutil.rmtree(folder, ignore_errors=True)
            raise DatasetRefused(f"Dataset '{name}' was being created by another upload at the same time; "
                                 "send yours again.", field="name", code="conflict", status=409) from exc
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return version


def key_of(config: dict[str, Any]) -> str:
    """A short stable key of a normalized evaluation config (console/evaluation/config.py): the config_key
    of results and gates, so that equal settings share one key."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class EvaluationResult(models.Model):
    """The metrics of one model version on one dataset version under one config; a later run with
    the same three replaces them."""

    version = models.ForeignKey("registry.ModelVersion", on_delete=models.CASCADE, related_name="evaluations")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="results")
    config = models.JSONField(default=dict)  # normalized: engine settings and evaluation settings
    config_key = models.CharField(max_length=16, db_index=True)
    metrics = models.JSONField(default=dict)
    # the runtime that measured the speed figures (tokens/s, TTFT): the one the version would be served
    # with under this config (engine.api.runtime_of); "" for results measured before runtimes were recorded
    runtime = models.CharField(max_length=16, blank=True, default="")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["version", "dataset_version", "config_key"],
                                               name="unique_result_per_config")]

    def __str__(self) -> str:
        return f"{self.version} on {self.dataset_version} [{self.config_key}]"


class PromotionGate(models.Model):
    """A rule the promote action checks: moving `alias` to a version needs that version's `metric`
    on `dataset` to be no worse than the version the alias points at now, by at most
    `max_regression_pct` percent (same dataset version, same config)."""

    model = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="promotion_gates")
    alias = models.SlugField(max_length=50, default="production")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="gates")
    metric = models.CharField(max_length=32, choices=GATE_METRICS)
    max_regression_pct = models.FloatField(default=2.0)
    config = models.JSONField(default=dict)
    config_key = models.CharField(max_length=16)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "alias", "metric"]
        constraints = [models.UniqueConstraint(fields=["model", "alias", "dataset", "metric"], name="unique_gate")]

    @classmethod
    def put(cls, model: Any, *, alias: str, dataset: Dataset, metric: str, max_regression_pct: float,
            config: dict[str, Any], actor: Any) -> PromotionGate:
        """Create the gate, or change the one on the same alias, dataset and metric; audited."""
        with transaction.atomic():
            gate, created = cls.objects.update_or_create(
                model=model, alias=alias, dataset=dataset, metric=metric,
                defaults={"max_regression_pct": max_regression_pct, "config": config, "config_key": key_of(config),
                          "created_by": actor if getattr(actor, "is_authenticated", False) else None})
            record(actor, "gate.set", gate, model_name=model.name, alias=alias, dataset=dataset.name, metric=metric,
                   max_regression_pct=max_regression_pct, created=created)
        return gate

    def remove(self, actor: Any) -> None:
        with transaction.atomic():
            record(actor, "gate.delete", self, model_name=self.model.name, alias=self.alias,
                   dataset=self.dataset.name, metric=self.metric)
            self.delete()

    def __str__(self) -> str:
        direction = "higher" if METRICS[self.metric].lower_is_better else "lower"
        return (f"{self.metric} on {self.dataset.name} no more than {plain(self.max_regression_pct)} % {direction} "
                f"than {self.alias}")
