from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import RetrieveAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from console.accounts.permissions import IsUser
from console.audit.models import record
from console.core.api import Conflict, error_response
from console.deployments.models import Deployment
from console.jobs.api.serializers import JobSerializer
from console.jobs.models import Job, TooManyJobs
from console.playground.api.serializers import SessionListSerializer, SessionSerializer
from console.playground.explain import ExplainAcceptedSerializer, ExplainRequestSerializer, Refused, prepare
from console.playground.models import Session

ERRORS = {code: OpenApiResponse(description=what) for code, what in (
    (400, "Bad input: unknown method, an answer over the token cap (the cap is named), a task explain does "
          "not support, a method the deployment cannot run."),
    (404, "No such deployment."),
    (409, "The deployment is not ready (stopped, loading, failed); the message says why."),
    (429, "You already have TAUON_EXPLAIN_MAX_PER_USER explain jobs queued or running (Retry-After)."),
)}
RETRY_AFTER_S = 5


class ExplainView(APIView):
    permission_classes = [IsUser]

    @extend_schema(request=ExplainRequestSerializer, responses={202: ExplainAcceptedSerializer, **ERRORS},
                   operation_id="deployments_explain",
                   description="Explain an answer with token attributions (Captum), as a background job on a worker "
                               "that hosts the deployment. Text generation: `messages` or `prompt`, optional "
                               "`output` (else the deployment answers greedily), `method`, `span`, `words`. "
                               "Text classification: `input` (and optional `label`), integrated gradients. "
                               "Answers 202 with the job's id; GET /api/jobs/{id}/ carries progress and, when it "
                               "succeeds, `result` = {input_tokens, output_tokens, attributions}.")
    def post(self, request: Request, name: str) -> Response:
        deployment = Deployment.objects.select_related("model", "version").filter(name=name).first()
        if deployment is None:
            return error_response(f"No deployment named '{name}'.", code="not_found", status_code=404)
        data = request.data if isinstance(request.data, dict) else {}
        try:
            params = prepare(deployment, data)
        except Refused as exc:
            return error_response(exc.message, code=exc.code, field=exc.field, status_code=exc.status)
        try:
            job = Job.enqueue_capped("explain", params, request.user, settings.TAUON_EXPLAIN_MAX_PER_USER)
        except TooManyJobs as exc:
            return error_response(str(exc), code="too_many_jobs", status_code=429,
                                  headers={"Retry-After": str(RETRY_AFTER_S)})
        body = {"job": job.pk, "deployment": name, "method": params["method"], "output_tokens": params["output_tokens"]}
        return Response(body, status=status.HTTP_202_ACCEPTED)


class ExplainCancelView(APIView):
    permission_classes = [IsUser]

    @extend_schema(request=None, responses={202: JobSerializer}, operation_id="deployments_explain_cancel",
                   description="Cancel an explain job: its creator (or a maintainer) may.")
    def post(self, request: Request, name: str, job: int) -> Response:
        row = Job.objects.filter(pk=job, kind="explain", params__deployment=name).first()
        if row is None or (row.created_by_id != request.user.pk and not request.user.is_maintainer):
            raise NotFound(f"No explain job #{job} of yours on '{name}'.")
        if not row.request_cancel(actor=request.user):
            raise Conflict(f"Job #{row.pk} has already finished ({row.status}); there is nothing to cancel.")
        return Response(JobSerializer(row).data, status=status.HTTP_202_ACCEPTED)


class SessionViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin,
                     mixins.UpdateModelMixin, mixins.DestroyModelMixin, GenericViewSet):
    """Your playground sessions: parameters, answers and explanations, saved; share one by link."""

    serializer_class = SessionSerializer
    permission_classes = [IsUser]
    ordering_fields = ["updated_at", "created_at", "title"]
    filterset_fields = ["mode", "deployment"]

    queryset = Session.objects.none()  # (for the schema) each user sees only their own

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if getattr(self, "swagger_fake_view", False):
            return Session.objects.none()
        return Session.objects.filter(owner=self.request.user).select_related("owner")

    def get_serializer_class(self):  # type: ignore[no-untyped-def]
        return SessionListSerializer if self.action == "list" else SessionSerializer

    def perform_create(self, serializer: SessionSerializer) -> None:
        serializer.save(owner=self.request.user)

    @extend_schema(request=None, responses={200: SessionSerializer},
                   description="Share by link: any signed-in user with the link may open it (read-only).")
    def share(self, request: Request, pk: int) -> Response:
        session = self.get_object()
        session.share()
        record(request.user, "playground.share", session, title=session.title)
        return Response(SessionSerializer(session, context={"request": request}).data)

    @extend_schema(request=None, responses={200: SessionSerializer}, description="Stop sharing: the link stops working.")
    def unshare(self, request: Request, pk: int) -> Response:
        session = self.get_object()
        session.unshare()
        record(request.user, "playground.unshare", session, title=session.title)
        return Response(SessionSerializer(session, context={"request": request}).data)


class SharedSessionView(RetrieveAPIView):
    """A session someone shared with you by link (read-only)."""

    serializer_class = SessionSerializer
    permission_classes = [IsAuthenticated, IsUser]
    lookup_field = "share_token"
    lookup_url_kwarg = "token"
    queryset = Session.objects.exclude(share_token=None).select_related("owner")
