"""The upload size limit (TAUON_MAX_UPLOAD_BYTES), enforced before the body is stored.

Two layers, because Django's ASGI handler spools the whole request body to a temp file before
any view or upload handler runs:
- `BodySizeLimit` wraps the ASGI application: a Content-Length over the limit is answered 413 at
  once, without reading the body; a body without one is cut off as soon as it passes the limit.
- `SizeLimitUploadHandler` (first in FILE_UPLOAD_HANDLERS) checks the same limit while Django
  parses multipart data (the WSGI/test path), before the file handlers write anything.
Under the limit, files stream to disk through Django's TemporaryFileUploadHandler."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from rest_framework import status
from rest_framework.exceptions import APIException

FORM_SLACK = 1024 * 1024  # multipart boundaries and the small form fields beside the file

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def too_large_message(size: int | None = None) -> str:
    limit = settings.TAUON_MAX_UPLOAD_BYTES
    what = f"The upload is {size} bytes" if size is not None else "The upload is"
    return (f"{what} over the limit of {limit} bytes (TAUON_MAX_UPLOAD_BYTES). Upload a smaller file, "
            f"or ask an admin to raise the limit.")


class UploadTooLarge(APIException, RequestDataTooBig):
    """413 through DRF's exception handler; a plain Django view sees a RequestDataTooBig (400)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "upload_too_large"

    def __init__(self, size: int | None = None):
        super().__init__({"file": [too_large_message(size)]}, code="upload_too_large")


class SizeLimitUploadHandler(FileUploadHandler):
    def handle_raw_input(self, input_data: Any, META: dict[str, Any], content_length: int, boundary: bytes,
                         encoding: str | None = None) -> None:
        if content_length and content_length > settings.TAUON_MAX_UPLOAD_BYTES + FORM_SLACK:
            raise UploadTooLarge(content_length)
        return None

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > settings.TAUON_MAX_UPLOAD_BYTES:
            raise UploadTooLarge()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


async def _reply_too_large(send: Send, size: int | None) -> None:
    body = json.dumps({"error": {"code": "upload_too_large", "message": too_large_message(size), "field": "file"}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over TAUON_MAX_UPLOAD_BYTES (plus form slack) with 413."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.TAUON_MAX_UPLOAD_BYTES + FORM_SLACK
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _reply_too_large(send, int(declared))
        received, cut_off, started = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, cut_off
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut_off = True
                    return {"type": "http.disconnect"}  # Django stops reading and sends nothing
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, tracked_send)
        if cut_off and not started:
            await _reply_too_large(send, None)
