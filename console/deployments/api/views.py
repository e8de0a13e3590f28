from __future__ import annotations

import time
from typing import Any

from asgiref.sync import async_to_sync
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from console.accounts.permissions import IsUser, ReadUserWriteMaintainer
from console.core.api import error_response
from console.deployments import live, tuning
from console.deployments.api.serializers import ApplyTuneSerializer, DeploymentSerializer, PredictSerializer
from console.deployments.models import Deployment
from console.inference import requests as parse
from console.inference.auth import Caller, caller_for
from console.inference.errors import ApiError
from console.inference.gateway import Call
from console.inference.limits import reserve, settle
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


class PredictViewSet(GenericViewSet):
    permission_classes = [IsUser]
    serializer_class = PredictSerializer

    @extend_schema(request=PredictSerializer, responses={200: dict},
                   description="Classify texts (labels with scores) or find their named entities, with a "
                               "text- or token-classification deployment.")
    def predict(self, request: Request, name: str) -> Response:
        deployment = Deployment.objects.select_related("model").filter(name=name).first()
        if deployment is None:
            return error_response(f"No deployment named '{name}'.", code="not_found", status_code=404)
        if deployment.model.task not in ("text-classification", "token-classification"):
            return error_response(f"'{name}' serves {deployment.model.task}; predict is for text- and "
                                  "token-classification deployments (use /v1 for the others).",
                                  code="wrong_task", field="name")
        if deployment.stopped:
            return error_response(f"Deployment '{name}' is stopped.", code="deployment_stopped", status_code=503)
        try:
            texts = parse.texts(request.data if isinstance(request.data, dict) else {}, deployment.config, "input")
            body = PredictSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            done = async_to_sync(self._run)(caller_for(request.user, request.auth), deployment,
                                            {"kind": "predict", "input": texts,
                                             "top_k": body.validated_data.get("top_k")})
        except ApiError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            return error_response(exc.message, code=exc.code or "invalid", field=exc.param,
                                  status_code=exc.status, headers=headers)
        return Response({"deployment": deployment.name, "task": deployment.model.task,
                         "version": done.get("version"), "results": done["results"]})

    @staticmethod
    async def _run(caller: Caller, deployment: Deployment, work: dict[str, Any]) -> dict[str, Any]:
        ticket = await reserve(caller.budget, work)
        call = Call(deployment.name, deployment.queue, deployment.config, work)
        done: dict[str, Any] = {}
        try:
            await call.open()
            accepted = await call.first()
            done = accepted if accepted["type"] == "done" else await call.done()
        finally:
            await call.close()
            await settle(ticket, int(done.get("usage", {}).get("prompt_tokens", 0)))
        return {**done, "version": accepted.get("version")}
