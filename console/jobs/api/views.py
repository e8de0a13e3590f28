from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from console.accounts.permissions import ReadUserWriteMaintainer
from console.core.api import Conflict
from console.jobs.api.serializers import JobCreateSerializer, JobSerializer, creatable_kinds
from console.jobs.examples import KIND_EXAMPLES
from console.jobs.filters import JobFilter
from console.jobs.models import Job


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    """Background jobs (imports, and later evaluation, compression…): list, inspect, start, cancel."""

    queryset = Job.objects.select_related("created_by")
    serializer_class = JobSerializer
    permission_classes = [ReadUserWriteMaintainer]
    filterset_class = JobFilter
    ordering_fields = ["created_at", "started_at", "finished_at", "status", "kind"]

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        return super().get_queryset().visible_to(self.request.user)

    def get_object(self) -> Job:
        job = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if job is None:
            raise NotFound(f"No job #{self.kwargs['pk']}.")
        return job

    @extend_schema(request=JobCreateSerializer, responses={202: JobSerializer},
                   description="Start a job of a kind that may be created directly; its params are validated.",
                   examples=KIND_EXAMPLES)
    def create(self, request: Request) -> Response:
        body = JobCreateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        job = Job.start(body.validated_data["kind"], body.validated_data["params"], request.user, checked=True)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: JobSerializer},
                   description="Start a new job of the same kind with the same parameters (validated again); "
                               "only kinds that may be started directly.")
    def rerun(self, request: Request, pk: int) -> Response:
        job = self.get_object()
        if job.kind not in creatable_kinds():
            raise Conflict(f"Job #{job.pk} is a '{job.kind}' job, which is started by the console, not directly; "
                           "it cannot be re-run.")
        try:
            new = job.rerun(request.user)
        except DjangoValidationError as exc:
            detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
            raise serializers.ValidationError({"params": detail}) from exc
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"params": exc.detail}) from exc
        return Response(JobSerializer(new).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: JobSerializer},
                   description="Cancel a queued job at once; ask a running job to stop at its next progress report.")
    def cancel(self, request: Request, pk: int) -> Response:
        job = self.get_object()
        if not job.request_cancel(actor=request.user):
            raise Conflict(f"Job #{job.pk} has already finished ({job.status}); there is nothing to cancel.")
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
