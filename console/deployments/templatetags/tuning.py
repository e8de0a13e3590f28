"""`{% tune_view job as tune %}`: what the tune result partial shows (rows, chart data, recommendation)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.translation import gettext as _

register = template.Library()


@register.simple_tag
def tune_view(job: Any) -> dict[str, Any] | None:
    from console.deployments.models import Deployment
    from console.deployments.views import plotly_version

    result = job.result if isinstance(job.result, dict) else None
    if result is None or "trials" not in result:
        return None
    front = set(result.get("pareto", []))
    recommended = result.get("recommended")
    rows = []
    for t in result["trials"]:
        f = t.get("figures") or {}
        rows.append({**t, "pareto": t["number"] in front, "recommended": t["number"] == recommended,
                     "tps": f.get("tokens_per_s"), "ttft": f.get("ttft_p99_ms"), "itl": f.get("itl_p99_ms"),
                     "concurrency": f.get("concurrency"), "memory_mb": (f.get("memory_bytes") or 0) / 2**20})
    measured = [r for r in rows if r["tps"] is not None]
    limit = result.get("constraints", {}).get("ttft_p99_ms")
    chart = {
        "points": [{"n": r["number"], "x": r["ttft"], "y": r["tps"], "status": r["status"]} for r in measured],
        "front": sorted(([r["ttft"], r["tps"]] for r in measured if r["pareto"]), key=lambda p: p[0]),
        "recommended": next(([r["ttft"], r["tps"]] for r in measured if r["recommended"]), None),
        "limit": limit,
        "labels": {"x": _("p99 time to first token (ms)"), "y": _("throughput (tokens/s)"),
                   "trials": _("trials"), "front": _("Pareto front"), "limit": _("TTFT target"),
                   "recommended": _("recommended")},
    }
    name = result.get("deployment")
    deployment = Deployment.objects.filter(name=name, model__name=result.get("model")).first() if name else None
    return {"rows": rows, "chart": chart, "recommended": recommended, "why": result.get("why", ""),
            "settings": result.get("recommended_settings"), "deployment": deployment,
            "plotly_version": plotly_version()}
