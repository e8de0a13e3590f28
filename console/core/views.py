from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.template import loader
from django.utils import translation
from django.views import i18n
from django.views.decorators.csrf import requires_csrf_token
from django.views.defaults import page_not_found

from console.deployments import live
from console.deployments.models import Deployment


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up. No auth, no dependencies."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """The database and Redis answer, and every deployment that should serve has a live replica. No auth."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {exc.__class__.__name__}"
    if checks["database"] == "ok" and checks["redis"] == "ok":
        checks["deployments"] = _deployments_serving()
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


def _deployments_serving() -> str:
    """Every deployment that should serve has a replica whose heartbeat is fresh."""
    waiting = []
    for deployment in Deployment.objects.filter(stopped=False).select_related("version"):
        target = deployment.target_version()
        if target is not None and target.status == "ready" and not live.live_replicas(deployment.name):
            waiting.append(deployment.name)  # (one with nothing ready to serve shows as failed on its page)
    return "ok" if not waiting else f"no ready replica: {', '.join(sorted(waiting)[:10])}"


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """JSON 404 in the API's error shape under /api/; the HTML page elsewhere."""
    if request.path.startswith("/api/"):
        message = f"No API endpoint at {request.path}; see /api/docs/ for the list."
        return JsonResponse({"error": {"code": "not_found", "message": message, "field": None}}, status=404)
    response = page_not_found(request, exception or Http404())
    response.tauon_page = True  # type: ignore[attr-defined]  # (OwnErrorPages leaves it be)
    return response


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    """The 500 page: a static template that needs neither the database nor the session (either may be what
    failed), so no user menu; JSON in the API's error shape under /api/."""
    if request.path.startswith("/api/"):
        message = "The server failed to answer; try again, and tell an admin if it persists."
        return JsonResponse({"error": {"code": "server_error", "message": message, "field": None}}, status=500)
    html = loader.get_template("500.html").render({"LANGUAGE_CODE": translation.get_language()})
    return HttpResponseServerError(html)


def set_language(request: HttpRequest) -> HttpResponse:
    """Django's set_language (the cookie), and the choice stored on the signed-in user so it follows them."""
    response = i18n.set_language(request)
    language = request.POST.get("language", "")
    user = getattr(request, "user", None)
    if (request.method == "POST" and user is not None and user.is_authenticated
            and translation.check_for_language(language) and language in dict(settings.LANGUAGES)):
        user.language = language
        user.save(update_fields=["language"])
    return response


class OwnErrorPages:
    """The product's 404 page in every environment: with TAUON_DEBUG on, Django would answer a missing page
    with its technical 404, which lists every URL pattern."""

    def __init__(self, get_response):  # type: ignore[no-untyped-def]
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (settings.DEBUG and response.status_code == 404 and not getattr(response, "tauon_page", False)
                and response.get("Content-Type", "").startswith("text/html")):
            return not_found(request)
        return response
