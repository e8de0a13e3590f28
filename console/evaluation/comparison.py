"""What a model's evaluation page compares: which dataset, dataset version and config, and the stored results
of the model's versions (and of parents in other models) on them. Read-only queries; the page renders it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q
from django.utils.translation import gettext

from console.evaluation.choices import QUALITY, SPEED, TASK_OF_KIND, DatasetKind
from console.evaluation.models import Dataset, DatasetVersion, EvaluationResult
from console.registry.models import Model


@dataclass
class Comparison:
    datasets: list[Dataset]  # those of the model's task
    dataset: Dataset | None = None
    dataset_version: DatasetVersion | None = None
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # config key → config, oldest first
    config_key: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kind(self) -> DatasetKind | None:
        return DatasetKind(self.dataset.kind) if self.dataset else None

    @property
    def columns(self) -> list[str]:
        """Quality metrics, then speed metrics, of the dataset's kind."""
        kind = self.kind
        return (QUALITY[kind] + SPEED[kind]) if kind else []


def compare(model: Model, dataset: str = "", dataset_version: str = "", config: str = "") -> Comparison:
    """The comparison asked for (a dataset name, a dataset version number and a config key, each optional),
    else that of the model's latest result: its dataset, the dataset version of its newest result there (else
    the dataset's latest), and the config most recently evaluated on it."""
    kinds = [k for k, task in TASK_OF_KIND.items() if task == model.task]
    out = Comparison(list(Dataset.objects.filter(kind__in=kinds).prefetch_related("versions")))
    results = EvaluationResult.objects.filter(version__model=model).select_related("dataset_version__dataset")
    latest = results.first()
    chosen = dataset or (latest.dataset_version.dataset.name if latest else "")
    out.dataset = next((d for d in out.datasets if d.name == chosen), None)
    in_dataset = results.filter(dataset_version__dataset=out.dataset) if out.dataset else results.none()
    newest = in_dataset.first()
    ds = out.dataset
    out.dataset_version = (ds.versions.filter(number=dataset_version).first() if ds and dataset_version.isdigit()
                           else newest.dataset_version if newest else ds.latest if ds else None)
    out.configs = {r.config_key: r.config
                   for r in in_dataset.filter(dataset_version=out.dataset_version).order_by("updated_at")}
    out.config_key = config or (newest.config_key if newest else "")
    if out.config_key not in out.configs and out.configs:
        out.config_key = next(reversed(out.configs))
    out.rows = _rows(model, out.dataset_version, out.config_key)
    return out


def _rows(model: Model, dataset_version: DatasetVersion | None, config_key: str) -> list[dict[str, Any]]:
    """The results of this model's versions, and of the versions of other models that are parents of
    them (a fine-tuning into a new model), labelled with their model so the child is compared with its
    parent: one query."""
    if dataset_version is None:
        return []
    parents_elsewhere = Q(version__children__model=model) & ~Q(version__model=model)
    results = (EvaluationResult.objects.filter(Q(version__model=model) | parents_elsewhere,
                                               dataset_version=dataset_version, config_key=config_key)
               .select_related("version__model", "version__parent__model", "job")
               .order_by("version__model_id", "version__number").distinct())
    own = sorted(results, key=lambda r: r.version.model_id != model.pk)  # this model's first, then the parents
    return [_row(model, r) for r in own]


def _row(model: Model, result: EvaluationResult) -> dict[str, Any]:
    version, parent = result.version, result.version.parent
    other = version.model_id != model.pk
    return {"version": version.number, "model": version.model.name, "other_model": other,
            "label": f"{version.model.name} v{version.number}" if other else f"v{version.number}",
            "parent": parent.number if parent else None,
            "parent_label": (None if parent is None else f"v{parent.number}" if parent.model_id == model.pk
                             else f"{parent.model.name} v{parent.number}"),
            "metrics": result.metrics, "job": result.job_id, "job_kind": result.job.kind if result.job else None,
            "replaced": result.metrics.get("replaced"), "updated_at": result.updated_at.isoformat(),
            **_runtime_label(result.runtime)}


RUNTIME_NAMES = {"llamacpp": "llama.cpp", "torch": "torch"}


def _runtime_label(runtime: str) -> dict[str, str]:
    """The runtime that measured a result's tokens/s and TTFT, as the row's small label and its tooltip."""
    if not runtime:
        return {"runtime": "", "runtime_label": "", "runtime_title": ""}
    name = RUNTIME_NAMES.get(runtime, runtime)
    return {"runtime": runtime, "runtime_label": gettext("measured on %(runtime)s") % {"runtime": name},
            "runtime_title": gettext("Tokens/s and TTFT were measured on %(runtime)s, the runtime this version is "
                                     "served with under this config.") % {"runtime": name}}
