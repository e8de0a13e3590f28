"""What every REST endpoint shares: pagination and the one error shape
`{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import Http404
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class Pagination(PageNumberPagination):
    """Pages by number; `page` and `page_size` must be whole numbers in range (a 400 says so, not a silent
    default), and the schema says the same ranges."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def _whole(self, request: Any, name: str, maximum: int | None = None) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1 or (maximum is not None and int(raw) > maximum):
            limit = f" up to {maximum}" if maximum is not None else ""
            raise exceptions.ValidationError({name: [f"Must be a whole number from 1{limit}; got '{raw}'."]})
        return int(raw)

    def get_page_size(self, request: Any) -> int:
        return self._whole(request, self.page_size_query_param, self.max_page_size) or self.page_size

    def get_page_number(self, request: Any, paginator: Any) -> int:
        return self._whole(request, self.page_query_param) or 1

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        page, page_size = super().get_schema_operation_parameters(view)
        page["schema"] = {"type": "integer", "minimum": 1}
        page_size["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return [page, page_size]


def read_strings_strictly() -> None:
    """Every serializer CharField takes only a string, as the schema (type: string) says; DRF's also takes a
    number and makes it one. Called once from CoreConfig.ready()."""
    to_internal_value = serializers.CharField.to_internal_value
    if getattr(to_internal_value, "strict", False):
        return

    def strict(self: serializers.CharField, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return to_internal_value(self, data)

    strict.strict = True  # type: ignore[attr-defined]
    serializers.CharField.to_internal_value = strict  # type: ignore[method-assign]


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    """A JSON object (a JSONField takes any JSON value; the schema and the check say object)."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise exceptions.ValidationError(f"{self.field_name} must be a JSON object.", code="invalid")
        return value


class Conflict(exceptions.APIException):
    """The request is well formed but the current state forbids it (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "This conflicts with the current state of the resource."
    default_code = "conflict"


# Validation codes with a status of their own: a well-formed body that names an object that does not exist
# (DRF's related fields say does_not_exist) is a 404, one that would duplicate an existing object a 409; 400 is
# for what the schema refuses.
STATUS_FOR_CODE = {"does_not_exist": status.HTTP_404_NOT_FOUND, "duplicate": status.HTTP_409_CONFLICT,
                   "unique": status.HTTP_409_CONFLICT}


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
        if isinstance(exc, exceptions.ValidationError) and str(code) in STATUS_FOR_CODE:
            response.status_code = STATUS_FOR_CODE[str(code)]
        response.data = {"error": {"code": str(code), "message": str(message), "field": field}}
    return response
