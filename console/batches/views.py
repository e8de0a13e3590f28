"""The Batches page: a user's batches (an admin's: everyone's) with progress, counts, downloads of the
input, output and error files, and cancel."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from console.batches import predict
from console.batches.models import Batch, BatchFile
from console.inference.errors import ApiError
from console.jobs.choices import JobStatus
from console.jobs.models import Job, TooManyJobs


@login_required
def batch_list(request: HttpRequest) -> HttpResponse:
    rows = Batch.objects.visible_to(request.user).select_related("owner")
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    for batch in page:
        batch.request_counts = batch.counts()
        done = batch.request_counts["completed"] + batch.request_counts["failed"]
        batch.percent = int(100 * done / batch.total) if batch.total else 0
    files = BatchFile.objects.visible_to(request.user).filter(
        pk__in={f for b in page for f in (b.input_file_id, b.output_file_id, b.error_file_id) if f})
    return render(request, "batches/list.html", {"page": page, "present": set(files.values_list("pk", flat=True)),
                                                 "admin": request.user.has_role("admin")})


@login_required
@require_POST
def batch_cancel(request: HttpRequest, batch_id: str) -> HttpResponse:
    batch = Batch.objects.visible_to(request.user).filter(pk=batch_id).first()
    if batch is None:
        raise Http404(_("No such batch."))
    try:
        batch.cancel(request.user)
    except ApiError:
        messages.error(request, _("Batch %(id)s is %(status)s; only a running batch can be cancelled.")
                       % {"id": batch.id, "status": batch.get_status_display()})
    else:
        messages.success(request, _("Cancelling batch %(id)s; the lines answered so far are kept.") % {"id": batch.id})
    return redirect("batches:list")


@login_required
def file_download(request: HttpRequest, file_id: str) -> HttpResponse:
    row = BatchFile.objects.visible_to(request.user).filter(pk=file_id).first()
    if row is None or not row.path.exists():
        raise Http404(_("No such file."))
    return FileResponse(open(row.path, "rb"), content_type="application/jsonl", as_attachment=True,  # noqa: SIM115
                        filename=row.filename)


@login_required
@require_POST
def predict_dataset(request: HttpRequest, name: str) -> HttpResponse:
    """The deployment page's "Predict on a dataset" form: the same checks as the API, then the job's page."""
    dataset, _sep, version = request.POST.get("dataset_version", "").rpartition("|")  # one <select>: "name|n"
    try:
        params = predict.check(name, {"dataset": dataset, "version": version})
        job = Job.start("predict", params, request.user, checked=True, cap=settings.TAUON_BATCH_MAX_ACTIVE_PER_USER)
    except (predict.PredictRefused, TooManyJobs) as exc:
        if isinstance(exc, predict.PredictRefused) and exc.field == "deployment" and exc.status == 404:
            raise Http404(exc.message) from exc
        why = exc.message if isinstance(exc, predict.PredictRefused) else str(exc)
        messages.error(request, _("Cannot predict on that dataset: %(why)s") % {"why": why})
        return redirect("deployments:detail", name=name)
    messages.success(request, _("Started %(job)s: predicting on %(dataset)s v%(version)s.")
                     % {"job": job, "dataset": params["dataset"], "version": params["version"]})
    return redirect("jobs:job-detail", pk=job.pk)


@login_required
def predictions_download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """A succeeded predict job's predictions as CSV or JSONL (who may see the job may download them)."""
    job = Job.objects.visible_to(request.user).filter(pk=pk, kind="predict", status=JobStatus.SUCCEEDED).first()
    if fmt not in ("csv", "jsonl") or job is None or not predict.path_of(job.pk).exists():
        raise Http404(_("No such predictions."))
    if fmt == "jsonl":
        return FileResponse(open(predict.path_of(job.pk), "rb"), content_type="application/jsonl",  # noqa: SIM115
                            as_attachment=True, filename=f"predictions-job-{job.pk}.jsonl")
    response = HttpResponse(predict.as_csv(predict.read(job.pk)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="predictions-job-{job.pk}.csv"'
    return response
