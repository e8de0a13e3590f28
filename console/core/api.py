"""What every REST endpoint shares: pagination and the one error shape
`{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class Conflict(exceptions.APIException):
    """The request is well formed but the current state forbids it (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "This conflicts with the current state of the resource."
    default_code = "conflict"


def error_response(message: str, *, code: str = "invalid", field: str | None = None,
                   status_code: int = status.HTTP_400_BAD_REQUEST, headers: dict[str, str] | None = None) -> Response:
    return Response({"error": {"code": code, "message": message, "field": field}}, status=status_code, headers=headers)


def _first_error(detail: Any, field: str | None = None) -> tuple[str | None, Any]:
    """Walk DRF's nested error detail down to the first message, remembering the field path."""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        name = None if key in ("non_field_errors", "__all__") else str(key)
        return _first_error(value, f"{field}.{name}" if field and name else (name or field))
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], field)
    return field, detail


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    if isinstance(exc, ProtectedError):
        used_by = sorted({str(obj) for obj in exc.protected_objects})[:5]
        exc = Conflict(f"Still in use by {', '.join(used_by)}; remove those first.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        field, message = _first_error(exc.detail)
        code = getattr(message, "code", None) or exc.default_code
        response.data = {"error": {"code": str(code), "message": str(message), "field": field}}
    return response
