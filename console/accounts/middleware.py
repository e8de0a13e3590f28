"""The signed-in user's language: a choice stored on the user (by the language switcher) beats the cookie
and Accept-Language, so it follows them to every browser. Integrations (an API key in Authorization) always get
English, so their error messages and logs read the same everywhere. Runs after AuthenticationMiddleware."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import translation


class UserLanguageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "Authorization" in request.headers and request.path.startswith(("/api/", "/v1/", "/metrics")):
            translation.activate("en")
            request.LANGUAGE_CODE = "en"  # type: ignore[attr-defined]
            return self.get_response(request)
        user = getattr(request, "user", None)
        language = getattr(user, "language", "") if user is not None and user.is_authenticated else ""
        if language and translation.check_for_language(language):
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()  # type: ignore[attr-defined]
        return self.get_response(request)
