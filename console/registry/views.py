"""Registry pages: thin views over the model methods. Uploads and hub imports go through the REST API
from the page's JavaScript; everything else posts a form here (a version's fine-tune and compress forms
start their jobs through the same validation as POST /api/jobs/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Max, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from console.accounts.choices import Role
from console.accounts.decorators import require_maintainer
from console.deployments.models import Deployment
from console.registry.choices import Task, VersionStatus
from console.registry.forms import CommentForm, ConfigForm, PromoteForm, RegisterModelForm
from console.registry.job_forms import CompressForm, FinetuneForm
from console.registry.models import Alias, Model, ModelVersion
from engine.int8_format import is_stored


@login_required
@require_http_methods(["GET", "POST"])
def model_list(request: HttpRequest) -> HttpResponse:
    form = RegisterModelForm()
    status = 200
    if request.method == "POST":
        require_maintainer(request, "Registering a model")
        form = RegisterModelForm(request.POST)
        if form.is_valid():
            model = form.save_for(request.user)
            messages.success(request, _("Registered model '%(name)s'. Add its first version below.")
                             % {"name": model.name})
            return redirect("registry:model-detail", name=model.name)
        status = 400
    query = request.GET.get("q", "").strip()
    task = request.GET.get("task", "")
    models = (Model.objects.annotate(version_count=Count("versions", distinct=True), latest=Max("versions__number"))
              .prefetch_related("aliases__version").select_related("owner"))
    if query:
        models = models.filter(Q(name__icontains=query) | Q(description__icontains=query))
    if task:
        models = models.filter(task=task)
    context = {"models": models, "form": form, "q": query, "task": task, "tasks": Task.choices,
               "searched": bool(query or task)}
    return render(request, "registry/model_list.html", context, status=status)


@login_required
@require_POST
def model_delete(request: HttpRequest, name: str) -> HttpResponse:
    """Admins delete a model (its versions and files) unless a deployment or an alias still uses it."""
    if not request.user.has_role(Role.ADMIN):  # type: ignore[union-attr]
        raise PermissionDenied(_("Deleting a model needs the 'admin' role."))
    model = get_object_or_404(Model, name=name)
    refusal = model.deletion_refusal()
    if refusal:
        messages.error(request, _("Not deleted: %(reason)s") % {"reason": refusal})
        return redirect("registry:model-detail", name=model.name)
    model.remove(request.user)
    messages.success(request, _("Deleted model '%(name)s' and its versions.") % {"name": name})
    return redirect("registry:model-list")


def deploy_url(model: Model, version: ModelVersion | None = None, alias: str = "") -> str:
    """The deployments page with its create form prefilled (?model=&version= or &alias=)."""
    query: dict[str, Any] = {"model": model.name}
    if version is not None:
        query["version"] = version.number
    elif alias:
        query["alias"] = alias
    return reverse("deployments:list") + "?" + urlencode(query)


def serving(version: ModelVersion) -> QuerySet[Deployment]:
    """The deployments serving this version: pinned to it, or following an alias that points at it."""
    aliases = list(version.aliases.values_list("name", flat=True))
    return (Deployment.objects.filter(model_id=version.model_id)
            .filter(Q(version=version) | Q(version__isnull=True, alias__in=aliases))
            .select_related("model", "version").order_by("name"))


@dataclass
class Node:
    """One version in the lineage tree, with the versions derived from it."""

    version: ModelVersion
    children: list[Node] = field(default_factory=list)


def lineage(versions: list[ModelVersion]) -> list[Node]:
    nodes = {v.pk: Node(v) for v in sorted(versions, key=lambda v: v.number)}
    roots: list[Node] = []
    for node in nodes.values():
        parent = nodes.get(node.version.parent_id) if node.version.parent_id else None
        (parent.children if parent else roots).append(node)
    return roots


def render_model(request: HttpRequest, model: Model, promote_form: PromoteForm | None = None,
                 status: int = 200) -> HttpResponse:
    versions = list(model.versions.select_related("created_by", "import_job", "produced_by", "parent__model")
                    .order_by("-number"))
    aliases = list(model.aliases.select_related("version").order_by("name"))
    for alias in aliases:
        alias.previous = alias.previous_version()  # type: ignore[attr-defined]  # what Roll back returns it to
    deployments = list(Deployment.objects.filter(model=model).select_related("version").order_by("name"))
    targets = {a.name: a.version for a in aliases}
    for deployment in deployments:  # what each serves now
        deployment.serves = deployment.version or targets.get(deployment.alias)  # type: ignore[attr-defined]
    context: dict[str, Any] = {
        "model": model,
        "versions": versions,
        "ready_versions": [v for v in versions if v.status == VersionStatus.READY],
        "aliases": aliases,
        "deployments": deployments,
        "deletion_refusal": model.deletion_refusal() if request.user.has_role(Role.ADMIN) else None,  # type: ignore[union-attr]
        "deploy_url": deploy_url(model, alias="production" if "production" in targets else ""),
        "history": model.alias_events.select_related("from_version", "to_version", "actor")[:100],
        "lineage": lineage(versions),
        "promote_form": promote_form or PromoteForm(model),
        "alias_names": sorted({"staging", "production", *model.aliases.values_list("name", flat=True)}),
    }
    return render(request, "registry/model_detail.html", context, status=status)


@login_required
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    return render_model(request, get_object_or_404(Model, name=name))


@login_required
@require_POST
def promote(request: HttpRequest, name: str) -> HttpResponse:
    require_maintainer(request, "Promoting a version")
    model = get_object_or_404(Model, name=name)
    form = PromoteForm(model, request.POST)
    if form.is_valid() and (event := form.promote(request.user)):
        messages.success(request, f"Alias '{event.alias_name}' now points to v{event.to_version.number}"
                                  + (f" (was v{event.from_version.number})." if event.from_version else "."))
        return redirect("registry:model-detail", name=model.name)
    return render_model(request, model, promote_form=form, status=400)


@login_required
@require_POST
def rollback(request: HttpRequest, name: str, alias: str) -> HttpResponse:
    require_maintainer(request, "Rolling back an alias")
    model = get_object_or_404(Model, name=name)
    get_object_or_404(Alias, model=model, name=alias)
    form = CommentForm(request.POST)
    comment = form.cleaned_data["comment"] if form.is_valid() else ""
    try:
        event = Alias.rollback(model, alias, request.user, comment=comment)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, _("Rolled '%(alias)s' back to v%(number)s.")
                         % {"alias": alias, "number": event.to_version.number})
    return redirect("registry:model-detail", name=model.name)


@login_required
@require_POST
def remove_alias(request: HttpRequest, name: str, alias: str) -> HttpResponse:
    require_maintainer(request, "Removing an alias")
    target = get_object_or_404(Alias, model__name=name, name=alias)
    target.remove(request.user)
    messages.success(request, _("Removed alias '%(alias)s'.") % {"alias": alias})
    return redirect("registry:model-detail", name=name)


def render_version(request: HttpRequest, version: ModelVersion, form: ConfigForm | None = None,
                   finetune_form: FinetuneForm | None = None, compress_form: CompressForm | None = None,
                   status: int = 200) -> HttpResponse:
    maintainer = request.user.has_role(Role.MAINTAINER)  # type: ignore[union-attr]
    ready = version.status == VersionStatus.READY
    stored = is_stored(Path(version.path)) if ready else None
    # Forms a job would always refuse are not offered; the page says why instead.
    can_finetune = maintainer and ready and not stored
    can_compress = can_finetune and version.model.task == Task.TEXT_GENERATION
    deployments = list(serving(version))
    context = {
        "version": version,
        "model": version.model,
        "form": form or ConfigForm(initial={"config": ConfigForm.render(version.config)}),
        "children": version.children.select_related("model").order_by("model__name", "number"),
        "aliases": version.aliases.order_by("name"),
        "deployments": deployments,
        "deploy_url": deploy_url(version.model, version) if ready else "",
        "stored_as": stored,
        "show_job_notes": maintainer and ready,
        "finetune_form": finetune_form or (FinetuneForm(version) if can_finetune else None),
        "compress_form": compress_form or (CompressForm(version) if can_compress else None),
    }
    return render(request, "registry/version_detail.html", context, status=status)


def _version(name: str, number: int) -> ModelVersion:
    return get_object_or_404(ModelVersion.objects.select_related("model", "created_by", "parent__model",
                                                                 "import_job", "produced_by"),
                             model__name=name, number=number)


@login_required
@require_http_methods(["GET", "POST"])
def version_detail(request: HttpRequest, name: str, number: int) -> HttpResponse:
    version = _version(name, number)
    if request.method == "POST":
        require_maintainer(request, "Editing a version's config")
        form = ConfigForm(request.POST)
        if form.is_valid() and form.save_to(version, request.user):
            messages.success(request, _("Saved the config of %(version)s.") % {"version": version})
            return redirect("registry:version-detail", name=name, number=number)
        return render_version(request, version, form=form, status=400)
    return render_version(request, version)


def _start(request: HttpRequest, name: str, number: int, form_class: type[FinetuneForm | CompressForm],
           what: str) -> HttpResponse:
    require_maintainer(request, what)
    version = _version(name, number)
    form = form_class(version, request.POST)
    job = form.start(request.user)
    if job is None:
        key = "finetune_form" if form_class is FinetuneForm else "compress_form"
        return render_version(request, version, status=400, **{key: form})
    started = (_("Started %(job)s: fine-tuning %(version)s.") if form_class is FinetuneForm
               else _("Started %(job)s: compressing %(version)s."))
    messages.success(request, started % {"job": job, "version": version})
    return redirect("jobs:job-detail", pk=job.pk)


@login_required
@require_POST
def version_finetune(request: HttpRequest, name: str, number: int) -> HttpResponse:
    return _start(request, name, number, FinetuneForm, "Fine-tuning")


@login_required
@require_POST
def version_compress(request: HttpRequest, name: str, number: int) -> HttpResponse:
    return _start(request, name, number, CompressForm, "Compressing")
