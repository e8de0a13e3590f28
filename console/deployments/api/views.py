from __future__ import annotations

import time

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from console.accounts.permissions import ReadUserWriteMaintainer
from console.core.api import error_response
from console.deployments import live, tuning
from console.deployments.api.serializers import ApplyTuneSerializer, DeploymentSerializer
from console.deployments.models import Deployment
from console.jobs.models import Job


class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                        mixins.UpdateModelMixin, mixins.DestroyModelMixin, GenericViewSet):
    """Deployments: a model served by replicas on Celery workers, under a name the /v1 API calls `model`."""

    queryset = Deployment.objects.select_related("model", "version", "created_by").prefetch_related(
        "replica_set__version")
    serializer_class = DeploymentSerializer
    permission_classes = [ReadUserWriteMaintainer]
    lookup_field = "name"
    filterset_fields = ["model__name", "stopped"]

    def perform_create(self, serializer: DeploymentSerializer) -> None:
        serializer.instance = Deployment.create(self.request.user, **serializer.validated_data)

    def perform_update(self, serializer: DeploymentSerializer) -> None:
        serializer.instance.change(self.request.user, **serializer.validated_data)

    def perform_destroy(self, instance: Deployment) -> None:
        instance.remove(self.request.user)

    def _set_stopped(self, request: Request, stopped: bool) -> Response:
        deployment = self.get_object()
        deployment.change(request.user, stopped=stopped)
        return Response(self.get_serializer(deployment).data)

    @extend_schema(request=None, description="Stop serving: replicas finish their requests and unload.")
    def stop(self, request: Request, name: str) -> Response:
        return self._set_stopped(request, True)

    @extend_schema(request=None, description="Serve again after a stop.")
    def start(self, request: Request, name: str) -> Response:
        return self._set_stopped(request, False)

    @extend_schema(parameters=[OpenApiParameter("since", float, description="Only samples after this epoch time.")],
                   responses={200: dict}, description="Recent engine figures, one sample per replica heartbeat.")
    def figures(self, request: Request, name: str) -> Response:
        deployment = self.get_object()
        try:
            since = float(request.query_params.get("since", 0))
        except ValueError as exc:
            raise ValidationError({"since": "must be a number (epoch seconds)"}) from exc
        return Response({"deployment": deployment.name, "now": time.time(),
                         "samples": live.figures(deployment.name, since)})

    @extend_schema(request=ApplyTuneSerializer, responses={200: DeploymentSerializer},
                   description="Move the deployment to the engine settings a finished tune job recommends (its "
                               "replicas load them beside the old engine, then switch); audited with the figures "
                               "before and after. Maintainers and admins only.")
    def apply_tune(self, request: Request, name: str) -> Response:
        deployment = self.get_object()
        body = ApplyTuneSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = Job.objects.visible_to(request.user).filter(pk=body.validated_data["job"]).first()
        if job is None:
            return error_response(f"No job #{body.validated_data['job']}.", code="not_found", field="job",
                                  status_code=404)
        try:
            tuning.apply(deployment, job, request.user)
        except tuning.NotApplicable as exc:
            return error_response(str(exc), code="invalid", field=exc.field, status_code=exc.status)
        deployment.refresh_from_db()
        return Response(self.get_serializer(deployment).data)

