"""POST /api/deployments/{name}/predict: a classification call through the same admission, limits and
gateway as /v1 (so it lives with them: deployments know nothing of the inference path)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from console.accounts.permissions import IsUser
from console.batches import predict
from console.core.api import error_response
from console.deployments.api.serializers import PredictDatasetSerializer, PredictSerializer
from console.deployments.models import Deployment
from console.inference import requests as parse
from console.inference.auth import Caller, caller_for
from console.inference.errors import ApiError
from console.inference.gateway import Call
from console.inference.limits import reserve, settle
from console.jobs.api.serializers import JobSerializer
from console.jobs.models import Job, TooManyJobs


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


class PredictDatasetViewSet(GenericViewSet):
    permission_classes = [IsUser]  # like the Batches: any user, their own jobs (private kind)
    serializer_class = PredictDatasetSerializer

    @extend_schema(request=PredictDatasetSerializer, responses={202: JobSerializer},
                   description="Predict on a registered dataset (`classification` for text-classification, `ner` "
                               "for token-classification deployments) as a background `predict` job; its result "
                               "has the label distribution (and the accuracy for a classification dataset) and "
                               "links to the predictions as CSV and JSONL.")
    def create(self, request: Request, name: str) -> Response:
        body = PredictDatasetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            params = predict.check(name, body.validated_data)
        except predict.PredictRefused as exc:  # the deployment is the path's `name` here
            return error_response(exc.message, code=exc.code, status_code=exc.status,
                                  field="name" if exc.field == "deployment" else exc.field)
        try:
            job = Job.start("predict", params, request.user, checked=True, cap=settings.TAUON_BATCH_MAX_ACTIVE_PER_USER)
        except TooManyJobs as exc:
            return error_response(str(exc), code="too_many_jobs", status_code=429, headers={"Retry-After": "60"})
        return Response(JobSerializer(job).data, status=202)
