"""Evaluation pages: datasets (list with upload, detail with a preview), and a model's evaluation page,
which starts evaluations (through the REST API from the page's script, like uploads), follows their
progress bars, and compares the stored results in a table and plotly charts. Gates are set here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext
from django.views.decorators.http import require_http_methods, require_POST

from console.accounts.choices import Role
from console.accounts.decorators import require_maintainer
from console.audit.models import AuditEvent
from console.deployments.views import plotly_version
from console.evaluation.choices import GATE_METRICS, METRICS, QUALITY, SPEED, TASK_OF_KIND, DatasetKind
from console.evaluation.config import normalize, summary
from console.evaluation.models import Dataset, DatasetRefused, DatasetVersion, EvaluationResult, PromotionGate
from console.jobs.choices import ACTIVE
from console.jobs.models import Job
from console.registry.choices import VersionStatus
from console.registry.models import Model


class UploadForm(forms.Form):
    name = forms.SlugField(max_length=100, help_text="An existing name adds a version.")
    kind = forms.ChoiceField(choices=DatasetKind.choices)
    file = forms.FileField(help_text=".txt for text; .jsonl (or .csv for classification) for the others.")
    description = forms.CharField(required=False, max_length=2000)


class GateForm(forms.Form):
    alias = forms.SlugField(max_length=50, initial="production")
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), to_field_name="name")
    metric = forms.ChoiceField(choices=GATE_METRICS, initial="perplexity")
    max_regression_pct = forms.FloatField(min_value=0, max_value=1000, initial=2.0, label="Max. worse (%)")

    def __init__(self, model: Model, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        kinds = [k for k, task in TASK_OF_KIND.items() if task == model.task]
        self.fields["dataset"].queryset = Dataset.objects.filter(kind__in=kinds)


@login_required
@require_http_methods(["GET", "POST"])
def dataset_list(request: HttpRequest) -> HttpResponse:
    form = UploadForm()
    status = 200
    if request.method == "POST":
        require_maintainer(request, "Uploading a dataset")
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                version = DatasetVersion.add(data["name"], data["kind"], data["file"].name, data["file"].read(),
                                             request.user, description=data["description"])
            except DatasetRefused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, f"Added {version}: {version.examples} examples, sha256 "
                                          f"{version.sha256[:12]}…")
                return redirect("evaluation:dataset-detail", name=version.dataset.name)
        status = 400
    datasets = Dataset.objects.annotate(version_count=Count("versions")).prefetch_related("versions")
    return render(request, "evaluation/dataset_list.html", {"datasets": datasets, "form": form}, status=status)


@login_required
def dataset_detail(request: HttpRequest, name: str) -> HttpResponse:
    dataset = get_object_or_404(Dataset, name=name)
    versions = list(dataset.versions.select_related("created_by"))
    results = (EvaluationResult.objects.filter(dataset_version__dataset=dataset)
               .select_related("version__model", "dataset_version")[:200])
    context = {"dataset": dataset, "versions": versions, "preview": versions[0].head() if versions else [],
               "results": results, "quality": QUALITY[DatasetKind(dataset.kind)]}
    return render(request, "evaluation/dataset_detail.html", context)


def _rows(model: Model, dataset_version: DatasetVersion | None, config_key: str) -> list[dict[str, Any]]:
    """The results of this model's versions, and of the versions of other models that are parents of
    them (a fine-tuning into a new model), labelled with their model so the child is compared with its
    parent: one query."""
    if dataset_version is None:
        return []
    parents_elsewhere = Q(version__children__model=model) & ~Q(version__model=model)
    results = (EvaluationResult.objects.filter(Q(version__model=model) | parents_elsewhere,
                                               dataset_version=dataset_version, config_key=config_key)
               .select_related("version__model", "version__parent__model")
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
            "metrics": result.metrics, "job": result.job_id, "updated_at": result.updated_at.isoformat(),
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


@login_required
def model_evaluation(request: HttpRequest, name: str) -> HttpResponse:
    model = get_object_or_404(Model, name=name)
    kinds = [k for k, task in TASK_OF_KIND.items() if task == model.task]
    datasets = list(Dataset.objects.filter(kind__in=kinds).prefetch_related("versions"))
    results = EvaluationResult.objects.filter(version__model=model).select_related("dataset_version__dataset")
    # what to compare: the chosen dataset version and config, else those of the latest result
    latest = results.first()
    chosen = request.GET.get("dataset") or (latest.dataset_version.dataset.name if latest else "")
    dataset = next((d for d in datasets if d.name == chosen), None)
    in_dataset = results.filter(dataset_version__dataset=dataset) if dataset else results.none()
    newest = in_dataset.first()
    number = request.GET.get("dataset_version")
    dataset_version = (dataset.versions.filter(number=number).first() if dataset and number and number.isdigit()
                       else newest.dataset_version if newest else dataset.latest if dataset else None)
    configs = {r.config_key: r.config for r in in_dataset.filter(dataset_version=dataset_version).order_by("updated_at")}
    config_key = request.GET.get("config") or (newest.config_key if newest else "")
    if config_key not in configs and configs:
        config_key = next(reversed(configs))
    kind = DatasetKind(dataset.kind) if dataset else None
    rows = _rows(model, dataset_version, config_key)
    columns = (QUALITY[kind] + SPEED[kind]) if kind else []
    ready = list(model.versions.filter(status=VersionStatus.READY).order_by("-number"))
    context = {
        "model": model,
        "datasets": datasets,
        "dataset": dataset,
        "dataset_version": dataset_version,
        "configs": [(key, summary(cfg)) for key, cfg in configs.items()],
        "config_key": config_key,
        "columns": [(c, METRICS[c]) for c in columns],
        "rows": rows,
        "chart": {"rows": rows, "quality": QUALITY[kind][0] if kind else None, "speed": SPEED[kind][0] if kind else None,
                  "labels": {c: METRICS[c].label for c in columns},
                  "lower_is_better": {c: METRICS[c].lower_is_better for c in columns}},
        "ready_versions": ready,
        "default_versions": {v.number for v in ready[:2]} | {a.version.number for a in model.aliases.all()},
        "default_config": normalize({}),
        "running": Job.objects.filter(kind="evaluate", params__model=model.name, status__in=ACTIVE),
        "gates": model.promotion_gates.select_related("dataset"),
        "gate_form": GateForm(model),
        "overrides": AuditEvent.objects.filter(action="gate.override", model_name=model.name).select_related("actor")[:20],
        "plotly_version": plotly_version(),
    }
    return render(request, "evaluation/model_evaluation.html", context)


@login_required
@require_POST
def gate_add(request: HttpRequest, name: str) -> HttpResponse:
    model = get_object_or_404(Model, name=name)
    if not request.user.has_role(Role.ADMIN):  # type: ignore[union-attr]
        messages.error(request, "Setting a promotion gate needs the 'admin' role.")
        return redirect("evaluation:model", name=name)
    form = GateForm(model, request.POST)
    if form.is_valid():
        data = form.cleaned_data
        gate = PromotionGate.put(model, alias=data["alias"], dataset=data["dataset"], metric=data["metric"],
                                 max_regression_pct=data["max_regression_pct"], config=normalize({}), actor=request.user)
        messages.success(request, f"Gate set: {gate}.")
    else:
        messages.error(request, "The gate was not set: " + "; ".join(
            f"{field}: {' '.join(errs)}" for field, errs in form.errors.items()))
    return redirect("evaluation:model", name=name)


@login_required
@require_POST
def gate_remove(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    gate = get_object_or_404(PromotionGate, model__name=name, pk=pk)
    if not request.user.has_role(Role.ADMIN):  # type: ignore[union-attr]
        messages.error(request, "Removing a promotion gate needs the 'admin' role.")
    else:
        gate.remove(request.user)
        messages.success(request, f"Removed the gate: {gate}.")
    return redirect("evaluation:model", name=name)
