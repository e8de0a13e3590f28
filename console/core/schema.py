"""The OpenAPI schema's shared parts: the one error shape, documented on every operation for the statuses
it can answer, by a drf-spectacular postprocessing hook (so no view repeats them)."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every REST error: what went wrong (`code`, stable), a sentence for people (`message`) and "
                   "the request field at fault (`field`, a dotted path, or null).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "invalid"},
                "message": {"type": "string", "example": "This field is required."},
                "field": {"type": "string", "nullable": True, "example": "name"},
            },
            "required": ["code", "message", "field"],
        },
    },
    "required": ["error"],
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

DESCRIPTIONS = {
    "400": "Bad input: the message says what is wrong and `field` names it.",
    "401": "No valid credentials: send `Authorization: Bearer <key>` (or log in).",
    "403": "Your role does not allow this (or, in a browser session, the CSRF token is missing).",
    "404": "No such object (or not one of yours), or a page past the last.",
    "409": "The current state forbids it; the message says why.",
    "413": "The upload is over the size limit named in the message.",
    "415": "The body's content type is not one this operation reads.",
    "429": "Over your rate limit: retry after `Retry-After` seconds.",
    "503": "Nothing can serve it now (stopped, or no live replica); `Retry-After` may say when to retry.",
}

WRITES = {"post", "put", "patch", "delete"}


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    """The error statuses an operation can answer, from what it takes."""
    statuses = ["401", "403"]
    parameters = operation.get("parameters", [])
    takes_query = any(p.get("in") == "query" for p in parameters)
    if takes_query or "requestBody" in operation or method in ("put", "patch"):
        statuses.append("400")
    if "{" in path or "requestBody" in operation or any(p.get("name") == "page" for p in parameters):
        statuses.append("404")
    if method in WRITES:
        statuses.append("409")
    if "requestBody" in operation:
        statuses.append("415")
        if "multipart/form-data" in operation["requestBody"].get("content", {}):
            statuses.append("413")
    return statuses


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: every operation documents its error answers with the Error schema."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            declared = [code for code in responses if code[0] in "45"]
            for code in sorted({*error_statuses(method, path, operation), *declared}):
                response = responses.setdefault(code, {})
                response.setdefault("description", DESCRIPTIONS.get(code, "An error."))
                response["content"] = {"application/json": {"schema": ERROR_REF}}
    return result
