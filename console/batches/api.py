"""OpenAI's Files and Batches API under /v1 (what the official client's `files` and `batches` call):
files with purpose "batch" (upload, list, retrieve, content, delete) and batches (create, retrieve,
list, cancel). Same authentication as the rest of /v1; a user sees their own, an admin everyone's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.batches.models import Batch, BatchFile
from console.inference import requests as parse
from console.inference.auth import authenticate
from console.inference.errors import ApiError, invalid

MAX_PAGE = 100


def _api(view: Callable[..., Awaitable[HttpResponse]]) -> Callable[..., Awaitable[HttpResponse]]:
    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            caller = await authenticate(request)
            return await view(request, caller.user, *args, **kwargs)
        except ApiError as exc:
            return exc.response()
        except RequestDataTooBig:
            return ApiError(413, "The request body is too large.", code="request_too_large").response()

    wrapped.__name__ = view.__name__
    return csrf_exempt(wrapped)  # API keys (or the session, whose CSRF `authenticate` checks)


def _page(request: HttpRequest, rows: Any) -> dict[str, Any]:
    """OpenAI's cursor pages: `limit` (1..100, default 20) and `after` (the last id seen)."""
    try:
        limit = int(request.GET.get("limit", 20))
    except ValueError as exc:
        raise invalid("'limit' must be an integer from 1 to 100.", "limit") from exc
    if not 1 <= limit <= MAX_PAGE:
        raise invalid("'limit' must be an integer from 1 to 100.", "limit")
    after = request.GET.get("after")
    if after:
        anchor = rows.filter(pk=after).first()
        if anchor is None:
            raise invalid(f"'after' names no item of this list: {after!r}.", "after")
        rows = rows.filter(created_at__lte=anchor.created_at).exclude(pk=anchor.pk).exclude(
            created_at=anchor.created_at, pk__gt=anchor.pk)
    items = list(rows[:limit + 1])
    data = [item.as_openai() for item in items[:limit]]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit}


def _own_file(user: Any, file_id: str) -> BatchFile:
    row = BatchFile.objects.visible_to(user).filter(pk=file_id).first()
    if row is None:
        raise ApiError(404, f"No file {file_id!r}.", param="file_id", code="file_not_found")
    return row


def _own_batch(user: Any, batch_id: str) -> Batch:
    row = Batch.objects.visible_to(user).filter(pk=batch_id).first()
    if row is None:
        raise ApiError(404, f"No batch {batch_id!r}.", param="batch_id", code="batch_not_found")
    return row


# --- files ----------------------------------------------------------------------------------------
def _upload(request: HttpRequest, user: Any) -> dict[str, Any]:
    cap = settings.TAUON_BATCH_MAX_FILE_BYTES
    if int(request.headers.get("Content-Length") or 0) > cap + 64 * 1024:
        raise ApiError(413, f"The file is above the cap of {cap} bytes per batch file; split it.", param="file",
                       code="file_too_large")
    upload = request.FILES.get("file")
    if upload is None:
        raise invalid("Send the file as multipart/form-data field 'file' (with 'purpose': \"batch\").", "file",
                      code="missing_required_parameter")
    return BatchFile.upload(user, upload.name or "", request.POST.get("purpose", ""), upload.chunks(),
                            upload.size or 0).as_openai()


def _list_files(request: HttpRequest, user: Any) -> dict[str, Any]:
    rows = BatchFile.objects.visible_to(user)
    if request.GET.get("purpose"):
        rows = rows.filter(purpose=request.GET["purpose"])
    return _page(request, rows)


@require_http_methods(["GET", "POST"])
@_api
async def files(request: HttpRequest, user: Any) -> HttpResponse:
    if request.method == "POST":
        return JsonResponse(await sync_to_async(_upload)(request, user))
    return JsonResponse(await sync_to_async(_list_files)(request, user))


def _delete_file(user: Any, file_id: str) -> dict[str, Any]:
    _own_file(user, file_id).remove(user)
    return {"id": file_id, "object": "file", "deleted": True}


@require_http_methods(["GET", "DELETE"])
@_api
async def file(request: HttpRequest, user: Any, file_id: str) -> HttpResponse:
    if request.method == "DELETE":
        return JsonResponse(await sync_to_async(_delete_file)(user, file_id))
    return JsonResponse((await sync_to_async(_own_file)(user, file_id)).as_openai())


@require_GET
@_api
async def file_content(request: HttpRequest, user: Any, file_id: str) -> HttpResponse:
    row = await sync_to_async(_own_file)(user, file_id)
    if not row.path.exists():
        raise ApiError(404, f"The content of file {file_id} is gone.", param="file_id", code="file_not_found")
    return FileResponse(open(row.path, "rb"), content_type="application/jsonl", as_attachment=True,  # noqa: SIM115
                        filename=row.filename)


# --- batches --------------------------------------------------------------------------------------
def _create(request: HttpRequest, user: Any) -> dict[str, Any]:
    data = parse.load_json(request.body)
    return Batch.start(user, data.get("input_file_id"), data.get("endpoint"), data.get("completion_window"),
                       data.get("metadata")).as_openai()


@require_http_methods(["GET", "POST"])
@_api
async def batches(request: HttpRequest, user: Any) -> HttpResponse:
    if request.method == "POST":
        return JsonResponse(await sync_to_async(_create)(request, user))
    return JsonResponse(await sync_to_async(_page)(request, Batch.objects.visible_to(user)))


@require_GET
@_api
async def batch(request: HttpRequest, user: Any, batch_id: str) -> HttpResponse:
    return JsonResponse(await sync_to_async(lambda: _own_batch(user, batch_id).as_openai())())


def _cancel(user: Any, batch_id: str) -> dict[str, Any]:
    row = _own_batch(user, batch_id)
    row.cancel(user)
    row.refresh_from_db()
    return row.as_openai()


@require_POST
@_api
async def cancel(request: HttpRequest, user: Any, batch_id: str) -> HttpResponse:
    return JsonResponse(await sync_to_async(_cancel)(user, batch_id))
