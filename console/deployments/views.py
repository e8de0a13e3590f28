"""Deployment pages (browser). They render what is there now; every change goes through the REST API
from the page's JavaScript (session + CSRF), and the pages poll the API to stay live."""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from importlib import metadata, resources
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from console.accounts.decorators import role_required
from console.batches import predict
from console.deployments import config as deployment_config
from console.deployments.choices import ReplicaStatus
from console.deployments.models import Deployment, Replica
from console.evaluation.models import DatasetVersion
from console.registry.choices import VersionStatus
from console.registry.models import Model, ModelVersion
from engine.config import QUANTIZATIONS, RUNTIMES
from engine.finetune import context_length

QUANTIZATION_LABELS = {"none": gettext_lazy("none (full precision)"), "int8": gettext_lazy("int8 (weight-only)"),
                       "w8a8": gettext_lazy("w8a8 (int8 weights and activations)"),
                       "int4": gettext_lazy("int4 (CUDA only)")}
RUNTIME_LABELS = {"auto": gettext_lazy("auto (llama.cpp for a GGUF version, else torch)"), "torch": "torch",
                  "llamacpp": "llama.cpp"}


@dataclass
class Row:
    """A deployment as the pages show it: the derived status computed once."""

    deployment: Deployment
    status: str
    reason: str
    serving: ModelVersion | None
    ready: int

    @classmethod
    def of(cls, deployment: Deployment) -> Row:
        status, reason = deployment.status_and_reason()
        ready = sum(r.state == ReplicaStatus.READY for r in deployment.replica_set.all())
        return cls(deployment, status, reason, deployment.target_version(), ready)


def serve_options(model: Model, current: str = "") -> list[dict[str, str]]:
    """What a deployment of `model` can serve: follow one of its aliases, or pin one ready version.
    Values read `alias:NAME` or `version:N`; the page's script turns them into the API's fields."""
    options = [{"value": f"alias:{a.name}",
                "label": _("follow '%(alias)s' (now v%(number)s)") % {"alias": a.name, "number": a.version.number}}
               for a in sorted(model.aliases.all(), key=lambda a: a.name)]
    options += [{"value": f"version:{v.number}", "label": _("pin v%(number)s") % {"number": v.number}}
                for v in model.versions.all() if v.status == VersionStatus.READY]
    if current and current not in {o["value"] for o in options}:  # e.g. its alias was removed since
        options.insert(0, {"value": current,
                           "label": _("follow '%(alias)s' (points nowhere)") % {"alias": current.partition(":")[2]}})
    return options


def model_context(model: Model) -> int | None:
    """The context (tokens) of the model's newest ready version that states one in its config.json; None if none."""
    for version in model.versions.all():  # (ready ones, newest first, as with_targets loads them)
        try:
            if found := context_length(version.path):
                return found
        except (OSError, ValueError):
            continue
    return None


def with_targets() -> QuerySet[Model]:
    """Models with their aliases and ready versions loaded, for serve_options."""
    ready = ModelVersion.objects.filter(status=VersionStatus.READY).order_by("-number")
    return Model.objects.order_by("name").prefetch_related("aliases__version", Prefetch("versions", ready))


def settings_context(config: dict[str, Any]) -> dict[str, Any]:
    """The engine settings and caps the forms edit, with their current values and bounds."""
    return {
        "config": config,
        "limits": deployment_config.LIMITS,
        "quantizations": [(q, QUANTIZATION_LABELS.get(q, q)) for q in QUANTIZATIONS],
        "runtimes": [(r, RUNTIME_LABELS.get(r, r)) for r in RUNTIMES],
    }


@role_required("user")
def deployment_list(request: HttpRequest) -> HttpResponse:
    deployments = Deployment.objects.select_related("model", "version").prefetch_related("replica_set")
    if deleted := request.GET.get("deleted"):  # (the page's script lands here after a delete)
        if not Deployment.objects.filter(name=deleted).exists():
            messages.success(request, _("Deleted deployment '%(name)s'.") % {"name": deleted})
    context: dict[str, Any] = {"rows": [Row.of(d) for d in deployments]}
    if request.user.is_maintainer:  # type: ignore[union-attr]
        models = list(with_targets())
        context.update(settings_context(deployment_config.normalize({})))
        context["models"] = models
        context["targets"] = {m.name: {"options": serve_options(m), "context": model_context(m)} for m in models}
    return render(request, "deployments/list.html", context)


@role_required("user")
def deployment_detail(request: HttpRequest, name: str) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("model", "version", "created_by")
                                   .prefetch_related("replica_set__version"), name=name)
    if request.GET.get("created"):  # (the page's script lands here after creating it)
        messages.success(request, _("Created deployment '%(name)s'. Its replicas start within seconds when a worker "
                                    "is running.") % {"name": deployment.name})
    now = timezone.now()
    replicas: list[Replica] = list(deployment.replica_set.all())
    for replica in replicas:  # what the replica table shows; None where the engine gave no figure yet
        stats = replica.stats or {}
        kv = stats.get("kv_cache_usage")
        replica.shown = {  # type: ignore[attr-defined]
            "heartbeat_age": max(0, round((now - replica.heartbeat_at).total_seconds())),
            "running": stats.get("running"), "waiting": stats.get("waiting"),
            "kv_percent": None if kv is None else round(kv * 100), "tokens_per_s": stats.get("tokens_per_s"),
            "idle": stats.get("running") == 0 and not stats.get("waiting"),  # its last tok/s lingers while idle
        }
    context: dict[str, Any] = {
        "deployment": deployment,
        "row": Row.of(deployment),
        "replicas": replicas,
        "site": request.build_absolute_uri("/").rstrip("/"),
        "poll_ms": 2000,
        "plotly_version": plotly_version(),
    }
    if deployment.model.task in predict.KINDS_FOR_TASK:  # "Predict on a dataset": the versions of a fitting kind
        context["predict_versions"] = list(DatasetVersion.objects.select_related("dataset").filter(
            dataset__kind__in=predict.KINDS_FOR_TASK[deployment.model.task]).order_by("dataset__name", "-number"))
    if request.user.is_maintainer:  # type: ignore[union-attr]
        model = with_targets().get(pk=deployment.model_id)
        current = f"alias:{deployment.alias}" if not deployment.version_id else f"version:{deployment.version.number}"
        context.update(settings_context(deployment.config))
        context["model_context"] = model_context(model)
        context["serve_options"] = serve_options(model, current)
        context["serve_current"] = current
    return render(request, "deployments/detail.html", context)


@functools.cache
def plotly_version() -> str:
    """The installed `plotly` package's version, or "" without it (the pages then go without charts)."""
    try:
        return metadata.version("plotly")
    except metadata.PackageNotFoundError:
        return ""


@functools.cache
def plotly_bundle() -> tuple[bytes, bytes]:
    """plotly.js as the `plotly` package ships it (the console works offline): plain and gzipped."""
    raw = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)


@login_required
@require_GET
def plotly_js(request: HttpRequest) -> HttpResponse:
    """The charting library for the deployment pages; its URL carries the version, so it is cached for good."""
    raw, packed = plotly_bundle()
    accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
    response = HttpResponse(packed if accepts_gzip else raw, content_type="text/javascript; charset=utf-8")
    if accepts_gzip:
        response["Content-Encoding"] = "gzip"
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    patch_vary_headers(response, ["Accept-Encoding"])
    return response
