"""Evaluation pages: datasets (list with upload, detail with a preview), and a model's evaluation page,
which starts evaluations (through the REST API from the page's script, like uploads), follows their
progress bars, and compares the stored results in a table and plotly charts. Gates are set here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from console.accounts.choices import Role
from console.accounts.decorators import require_maintainer
from console.audit.models import AuditEvent
from console.deployments.views import plotly_version
from console.evaluation.choices import GATE_METRICS, METRICS, QUALITY, SPEED, TASK_OF_KIND, DatasetKind
from console.evaluation.comparison import compare
from console.evaluation.config import normalize, summary
from console.evaluation.models import Dataset, DatasetRefused, DatasetVersion, EvaluationResult, PromotionGate
from console.jobs.choices import ACTIVE
from console.jobs.models import Job
from console.registry.choices import VersionStatus
from console.registry.models import Model


class UploadForm(forms.Form):
    name = forms.SlugField(max_length=100, label=gettext_lazy("Name"),
                           help_text=gettext_lazy("An existing name adds a version."),
                           error_messages={"invalid": gettext_lazy("Use letters, digits, - and _ only.")})
    kind = forms.ChoiceField(choices=DatasetKind.choices, label=gettext_lazy("Kind"))
    file = forms.FileField(label=gettext_lazy("File"), help_text=gettext_lazy(
        ".txt for text; .jsonl (or .csv for classification) for the others."))
    description = forms.CharField(required=False, max_length=2000, label=gettext_lazy("Description"))


class GateForm(forms.Form):
    alias = forms.SlugField(max_length=50, initial="production", label=gettext_lazy("Alias"),
                            error_messages={"invalid": gettext_lazy("Use letters, digits, - and _ only.")})
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), to_field_name="name",
                                     label=gettext_lazy("Dataset"))
    metric = forms.ChoiceField(choices=GATE_METRICS, initial="perplexity", label=gettext_lazy("Metric"))
    max_regression_pct = forms.FloatField(min_value=0, max_value=1000, initial=2.0,
                                          label=gettext_lazy("Max. worse (%)"))

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
                messages.success(request, _("Added %(version)s: %(n)s examples, sha256 %(sha)s…") % {
                    "version": version, "n": version.examples, "sha": version.sha256[:12]})
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


@login_required
def model_evaluation(request: HttpRequest, name: str) -> HttpResponse:
    model = get_object_or_404(Model, name=name)
    c = compare(model, request.GET.get("dataset", ""), request.GET.get("dataset_version", ""),
                request.GET.get("config", ""))
    kind, columns = c.kind, c.columns
    ready = list(model.versions.filter(status=VersionStatus.READY).order_by("-number"))
    context = {
        "model": model,
        "datasets": c.datasets,
        "dataset": c.dataset,
        "dataset_version": c.dataset_version,
        "configs": [(key, summary(cfg)) for key, cfg in c.configs.items()],
        "config_key": c.config_key,
        "columns": [(col, METRICS[col]) for col in columns],
        "rows": c.rows,
        "chart": {"rows": c.rows, "quality": QUALITY[kind][0] if kind else None,
                  "speed": SPEED[kind][0] if kind else None,
                  "labels": {col: METRICS[col].label for col in columns},
                  "lower_is_better": {col: METRICS[col].lower_is_better for col in columns},
                  "units": {col: METRICS[col].unit for col in columns},
                  "heading_units": {col: METRICS[col].heading_unit for col in columns}},
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
        messages.error(request, _("Setting a promotion gate needs the 'admin' role."))
        return redirect("evaluation:model", name=name)
    form = GateForm(model, request.POST)
    if form.is_valid():
        data = form.cleaned_data
        gate = PromotionGate.put(model, alias=data["alias"], dataset=data["dataset"], metric=data["metric"],
                                 max_regression_pct=data["max_regression_pct"], config=normalize({}), actor=request.user)
        messages.success(request, _("Gate set: %(gate)s.") % {"gate": gate})
    else:
        messages.error(request, _("The gate was not set: %(errors)s") % {"errors": "; ".join(
            f"{form.fields[field].label if field in form.fields else field}: {' '.join(errs)}"
            for field, errs in form.errors.items())})
    return redirect("evaluation:model", name=name)


@login_required
@require_POST
def gate_remove(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    gate = get_object_or_404(PromotionGate, model__name=name, pk=pk)
    if not request.user.has_role(Role.ADMIN):  # type: ignore[union-attr]
        messages.error(request, _("Removing a promotion gate needs the 'admin' role."))
    else:
        gate.remove(request.user)
        messages.success(request, _("Removed the gate: %(gate)s.") % {"gate": gate})
    return redirect("evaluation:model", name=name)
