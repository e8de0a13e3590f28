"""The playground page. It renders the deployments and the user's saved sessions; everything else (chat,
completions, embeddings, classification, explain, saving) runs in console/static/console/playground.js
against /v1 and the REST API with the browser session."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from console.accounts.decorators import role_required
from console.deployments.models import Deployment
from console.deployments.views import plotly_version
from console.playground.api.serializers import SessionSerializer
from console.playground.choices import EXPLAINABLE
from console.playground.models import Session

HISTORY = 30


def deployment_options() -> list[dict[str, Any]]:
    """What the page needs of each deployment: task, status, sampling defaults and caps."""
    options = []
    for d in Deployment.objects.select_related("model", "version").prefetch_related("replica_set"):
        status, reason = d.status_and_reason()
        config = d.config or {}
        options.append({"name": d.name, "task": d.model.task, "model": d.model.name, "status": status,
                        "reason": reason, "sampling": config.get("sampling", {}),
                        "max_tokens": config.get("max_tokens"),
                        "quantization": (config.get("engine") or {}).get("quantization", "none"),
                        "explainable": d.model.task in EXPLAINABLE})
    return options


def _page(request: HttpRequest, session: Session | None, *, read_only: bool = False) -> HttpResponse:
    data = SessionSerializer(session, context={"request": request}).data if session else None
    context = {
        "deployments": deployment_options(),
        "history": Session.objects.filter(owner=request.user)[:HISTORY],
        "session": session,
        "session_data": data,
        "read_only": read_only,
        "plotly_version": plotly_version(),
        "max_explain_tokens": settings.TAUON_EXPLAIN_MAX_OUTPUT_TOKENS,
    }
    return render(request, "playground/page.html", context)


@role_required("user")
def playground(request: HttpRequest) -> HttpResponse:
    return _page(request, None)


@role_required("user")
def session_page(request: HttpRequest, pk: int) -> HttpResponse:
    session = Session.objects.filter(pk=pk, owner=request.user).first()
    if session is None:
        raise Http404(f"No playground session #{pk} of yours; a shared session opens through its link.")
    return _page(request, session)


@role_required("user")
def shared_page(request: HttpRequest, token: str) -> HttpResponse:
    session = get_object_or_404(Session.objects.exclude(share_token=None).select_related("owner"), share_token=token)
    return _page(request, session, read_only=session.owner_id != request.user.pk)
