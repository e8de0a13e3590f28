"""`{% load evaluation %}`: metric formatting, and the evaluation cards of the registry pages."""

from __future__ import annotations

from typing import Any

from django import template

from console.evaluation.choices import METRICS, QUALITY, SPEED, DatasetKind, format_metric
from console.evaluation.config import summary
from console.evaluation.models import EvaluationResult

register = template.Library()


@register.filter
def metric(metrics: dict[str, Any] | None, name: str) -> str:
    """One metric of a result, formatted for its kind: bytes as sizes, rates and seconds rounded."""
    return format_metric(name, (metrics or {}).get(name))


@register.filter
def metric_label(name: str) -> str:
    return METRICS[name].label if name in METRICS else name


@register.inclusion_tag("evaluation/_version_results.html", takes_context=True)
def version_evaluations(context: dict[str, Any], version: Any) -> dict[str, Any]:
    """The results of one model version, newest first, with each kind's headline metrics."""
    rows = []
    for r in (EvaluationResult.objects.filter(version=version)
              .select_related("dataset_version__dataset", "job")[:50]):
        kind = DatasetKind(r.dataset_version.dataset.kind)
        rows.append({"result": r, "summary": summary(r.config),
                     "shown": [(m, r.metrics.get(m)) for m in (QUALITY[kind] + SPEED[kind])[:4]]})
    return {"rows": rows, "version": version, "user": context.get("user")}
