"""What a job produced, for the pages: the model it worked on and the versions (or evaluation, explanation)
it made, as names and links, and each kind's result as rows a person reads rather than JSON.

Read-only, from the job's params and result and the rows they name; a job whose version was deleted since
shows the names its result recorded, without a link."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from console.evaluation.choices import format_metric
from console.jobs.models import Job

# The comparison of a compress job: label, lower is better.
COMPARED = {
    "size_bytes": (_("Size on disk"), True),
    "served_bytes": (_("Size served"), True),
    "parameter_count": (_("Parameters"), True),
    "perplexity": (_("Perplexity"), True),
    "exact_match": (_("Exact match"), False),
    "token_f1": (_("Token F1"), False),
    "tokens_per_s": (_("Tokens/s"), False),
    "peak_memory_bytes": (_("Peak memory"), True),
}


@dataclass
class Link:
    label: str
    url: str | None = None


@dataclass
class Outcome:
    """The model a job is about and what it produced (links), for the Jobs list and the job page."""
    model: Link | None = None
    produced: list[Link] = field(default_factory=list)


def version_link(model: str | None, number: Any) -> Link | None:
    if not model or number is None:
        return None
    from console.registry.models import ModelVersion

    label = f"{model} v{number}"
    exists = ModelVersion.objects.filter(model__name=model, number=number).exists()
    return Link(label, reverse("registry:version-detail", args=[model, number]) if exists else None)


def model_link(name: str | None) -> Link | None:
    if not name:
        return None
    from console.registry.models import Model

    return Link(name, reverse("registry:model-detail", args=[name]) if Model.objects.filter(name=name).exists()
                else None)


def outcome(job: Job) -> Outcome:
    """Names before ids: an import names its model and version, a compress or fine-tune job its child."""
    from console.registry.models import ModelVersion

    p, r = job.params or {}, job.result if isinstance(job.result, dict) else {}
    out = Outcome()
    produced = [v for v in job.produced_versions.all()] if job.pk else []  # type: ignore[attr-defined]
    if job.kind == "import":
        version = (job.imported_versions.select_related("model").first()  # type: ignore[attr-defined]
                   or ModelVersion.objects.select_related("model").filter(pk=p.get("version")).first())
        if version is not None:
            out.model = Link(version.model.name, reverse("registry:model-detail", args=[version.model.name]))
            out.produced = [Link(str(version), reverse("registry:version-detail",
                                                       args=[version.model.name, version.number]))]
        return out
    if job.kind == "explain":
        name = p.get("deployment")
        if name:
            out.model = Link(name, reverse("deployments:detail", args=[name]))
        if job.status == "succeeded":
            out.produced = [Link(str(_("token attributions")), reverse("jobs:job-detail", args=[job.pk]) + "#explain")]
        return out
    out.model = model_link(p.get("model") or r.get("model"))
    for version in produced:
        out.produced.append(Link(str(version), reverse("registry:version-detail",
                                                      args=[version.model.name, version.number])))
    if not out.produced and job.kind == "compress" and r.get("child") is not None:
        out.produced = [link for link in [version_link(r.get("model"), r["child"])] if link]
    if not out.produced and job.kind == "finetune" and r.get("version") is not None:
        out.produced = [link for link in [version_link(r.get("model"), r["version"])] if link]
    if job.kind == "evaluate" and job.status == "succeeded" and out.model is not None and out.model.url:
        out.produced = [Link(str(_("evaluation results")), reverse("evaluation:model", args=[out.model.label]))]
    return out


# --- each kind's result as rows -----------------------------------------------------------------------------

def metric_label(name: str) -> str:
    from console.evaluation.choices import METRICS

    if name in COMPARED:
        return str(COMPARED[name][0])
    return str(METRICS[name].label) if name in METRICS else name.replace("_", " ")


def compress_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Parent, child and child/parent for each compared figure, with whether the child is better."""
    rows = []
    for key, figures in (result.get("comparison") or {}).items():
        lower = COMPARED.get(key, (None, True))[1]
        ratio = figures.get("ratio")
        better = None if ratio is None or ratio == 1 else (ratio < 1) == lower
        rows.append({"key": key, "label": metric_label(key), "parent": format_metric(key, figures.get("parent")),
                     "child": format_metric(key, figures.get("child")),
                     "ratio": "—" if ratio is None else f"{ratio:.3f}×", "better": better})
    return rows


def evaluate_rows(result: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric names, one row per version number with its formatted metrics)."""
    metrics = result.get("metrics") or {}
    names: list[str] = []
    for values in metrics.values():
        names += [k for k, v in (values or {}).items() if isinstance(v, int | float) and k not in names]
    rows = [{"version": key, "values": [format_metric(n, (values or {}).get(n)) for n in names]}
            for key, values in sorted(metrics.items(), key=lambda item: str(item[0]))]
    return [metric_label(n) for n in names], rows


def finetune_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """Held-out figures of the parent against the child (and the majority-class baseline for classifiers)."""
    rows = []
    evaluation = result.get("evaluation") or {}
    child, parent = evaluation.get("child") or {}, evaluation.get("parent") or {}
    for key in [k for k in child if isinstance(child.get(k), int | float)]:
        rows.append({"label": metric_label(key), "parent": format_metric(key, parent.get(key)),
                     "child": format_metric(key, child.get(key))})
    return rows


def heatmap(result: dict[str, Any]) -> dict[str, Any] | None:
    """Explain's attributions as a table: one row per output token, one cell per input feature, each with its
    score and a background whose strength is the score's share of the row's largest magnitude."""
    inputs = result.get("input_tokens")
    scores = result.get("attributions")
    if not inputs or not scores:
        return None
    outputs = result.get("output_tokens") or [result.get("label") or ""]
    if scores and not isinstance(scores[0], list):
        scores = [scores]
    rows = []
    for token, row in zip(outputs, scores, strict=False):
        peak = max((abs(v) for v in row if isinstance(v, int | float)), default=0.0) or 1.0
        cells = []
        for v in row:
            v = v if isinstance(v, int | float) else 0.0
            share = min(1.0, abs(v) / peak)
            colour = f"rgba(220, 60, 60, {share:.2f})" if v >= 0 else f"rgba(50, 90, 220, {share:.2f})"
            cells.append({"value": f"{v:.3f}", "style": f"background: {colour}"})
        rows.append({"token": token, "cells": cells})
    return {"inputs": inputs, "rows": rows}
