"""Job pages: a filtered list with live progress bars, a detail page with the log (and a live plotly chart
of the job's series, e.g. a fine-tuning's loss per step), and cancel."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from rest_framework.exceptions import ValidationError as ApiValidationError

from console.accounts.decorators import require_maintainer
from console.batches import predict
from console.deployments.views import plotly_version
from console.jobs import kinds, results
from console.jobs.api.serializers import creatable_kinds
from console.jobs.choices import JobStatus
from console.jobs.filters import JobFilter
from console.jobs.forms import refusals
from console.jobs.models import Job


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    visible = Job.objects.visible_to(request.user).select_related("created_by")
    jobs = JobFilter(request.GET, queryset=visible).qs  # the API's filters
    kind = request.GET.get("kind", "")
    status = request.GET.get("status", "")
    created_by = request.GET.get("created_by", "")
    active = request.GET.get("active", "")
    page = Paginator(jobs.prefetch_related("produced_versions__model"), 50).get_page(request.GET.get("page"))
    for job in page:
        job.outcome = results.outcome(job)  # type: ignore[attr-defined]  # its model and what it produced
    context = {
        "page": page,
        "kinds": Job.objects.order_by("kind").values_list("kind", flat=True).distinct(),
        "statuses": JobStatus.choices,
        "creators": Job.objects.exclude(created_by=None).order_by("created_by__username")
                       .values_list("created_by__username", flat=True).distinct(),
        "kind": kind,
        "status": status,
        "created_by": created_by,
        "active": active,
        "filtered": any((kind, status, created_by, active)),
    }
    return render(request, "jobs/job_list.html", context)


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.visible_to(request.user).select_related("created_by"), pk=pk)
    axes = getattr(kinds.KINDS.get(job.kind), "series_axes", None)  # kinds that report live series
    if axes is None and job.series:
        axes = ("x", "value")
    chart = {"series": job.series, "x": axes[0], "y": axes[1]} if axes else None
    result = job.result if isinstance(job.result, dict) else {}
    context = {"job": job, "rerunnable": job.kind in creatable_kinds(), "chart": chart,
               "plotly_version": plotly_version() if chart else "", "outcome": results.outcome(job), "r": result}
    if job.kind == "compress":
        context["comparison"] = results.compress_rows(result)
    elif job.kind == "evaluate":
        context["metric_names"], context["metric_rows"] = results.evaluate_rows(result)
    elif job.kind == "finetune":
        context["heldout_rows"] = results.finetune_rows(result)
        baseline = result.get("baseline")
        accuracy = result.get("eval_accuracy")
        context["useless"] = bool(baseline and isinstance(accuracy, int | float)
                                  and accuracy <= baseline.get("accuracy", 0))
    elif job.kind == "explain":
        context["heatmap"] = results.heatmap(result)
    elif job.kind == "predict":
        context["predict_chart"] = predict.chart(result)
        context["plotly_version"] = plotly_version()
    # who may cancel: maintainers any job; a user their own predict job (the Batches' rule: your own work)
    context["can_cancel"] = request.user.is_maintainer or (  # type: ignore[union-attr]
        job.kind == "predict" and job.created_by_id == request.user.pk)
    return render(request, "jobs/job_detail.html", context)


@login_required
@require_POST
def job_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    require_maintainer(request, "Re-running a job")
    job = get_object_or_404(Job, pk=pk)
    if job.kind not in creatable_kinds():
        messages.error(request, _("%(job)s is started by the console, not directly; it cannot be re-run.")
                       % {"job": job})
        return redirect("jobs:job-detail", pk=job.pk)
    try:
        new = job.rerun(request.user)
    except (ValidationError, ApiValidationError) as exc:  # kinds refuse with either
        messages.error(request, _("Cannot re-run it:") + " " + " ".join(
            f"{field}: {message}" if field else message for field, message in refusals(exc)))
        return redirect("jobs:job-detail", pk=job.pk)
    messages.success(request, _("Started %(new)s, a re-run of #%(pk)s with the same parameters.")
                     % {"new": new, "pk": job.pk})
    return redirect("jobs:job-detail", pk=new.pk)


@login_required
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.visible_to(request.user), pk=pk)
    if not (job.kind == "predict" and job.created_by_id == request.user.pk):  # a user's own predict job
        require_maintainer(request, "Cancelling a job")
    if job.request_cancel(actor=request.user):
        messages.success(request, (_("Cancel requested for %(job)s.") if job.status == JobStatus.RUNNING
                                   else _("Cancelled %(job)s.")) % {"job": job})
    else:
        messages.error(request, _("%(job)s already ended (%(status)s); there is nothing to cancel.")
                       % {"job": job, "status": str(job.get_status_display()).lower()})
    return redirect("jobs:job-detail", pk=job.pk)
