"""Anonymous request bodies are refused from the headers, before a byte of the body is read.

Django's ASGI handler reads (and spools to a temp file) the whole body before any middleware or
view runs, so without this layer anyone could make the server write gigabytes to disk.
`AnonymousBodyGuard` wraps the ASGI application: a request that may carry more than
TAUON_ANONYMOUS_BODY_BYTES (a larger Content-Length, or a chunked body) must present credentials
in its headers: an `Authorization: Bearer` key that exists and is usable, or a session cookie of a
live session of an active user. Without them it is answered 401 (413 on the login and health
routes, which need no credentials but take no large bodies) and the connection closed. A small
anonymous body goes on to Django (which refuses it as usual); the server holds a body to its
declared length. Authenticated bodies stream on as before.

Lookups run through sync_to_async and are cached briefly per process (valid credentials only):
this is a gate against anonymous bulk, not the authentication of record (the views do that)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import parse_cookie

from console.accounts.models import ApiKey, User, hash_key
from console.inference.ttl import TTLCache

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

EXEMPT = ("/healthz", "/readyz", "/login/", "/admin/login/")  # no credentials needed (nor large bodies taken)
VALID: TTLCache[bool] = TTLCache(ttl_s=5.0)


def _key_usable(raw: str) -> bool | None:
    return ApiKey.objects.usable().filter(hashed_key=hash_key(raw)).exists() or None


def _session_live(session_key: str) -> bool | None:
    from django.contrib.auth import SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user_id = store.get(SESSION_KEY)  # loads the session; an expired or unknown one is empty
    if user_id is None:
        return None
    return User.objects.filter(pk=user_id, is_active=True).exists() or None


async def has_credentials(headers: dict[bytes, bytes]) -> bool:
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, raw = authorization.strip().partition(" ")
    raw = raw.strip()
    if scheme.lower() == "bearer" and raw and raw.isprintable() and len(raw) < 256:
        return bool(await VALID.get_or_load("k:" + hash_key(raw), sync_to_async(lambda: _key_usable(raw))))
    cookie = parse_cookie(headers.get(b"cookie", b"").decode("latin-1"))
    session_key = cookie.get(settings.SESSION_COOKIE_NAME, "")
    if session_key and session_key.isalnum() and len(session_key) <= 64:
        return bool(await VALID.get_or_load("s:" + session_key, sync_to_async(lambda: _session_live(session_key))))
    return False


async def _refuse(scope: Scope, send: Send, status: int, cap: int) -> None:
    if status == 401:
        message = (f"A request body over {cap} bytes needs credentials in its headers: 'Authorization: Bearer "
                   f"<api key>' or a logged-in session.")
        code = "not_authenticated"
    else:
        message = f"This route takes request bodies of at most {cap} bytes."
        code = "request_too_large"
    if scope["path"].startswith("/v1/"):
        error: dict[str, Any] = {"message": message, "type": "authentication_error" if status == 401
                                 else "invalid_request_error", "param": None,
                                 "code": "invalid_api_key" if status == 401 else code}
    else:
        error = {"code": code, "message": message, "field": None}
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AnonymousBodyGuard:
    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cap = settings.TAUON_ANONYMOUS_BODY_BYTES
        declared = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not chunked and (declared is None or (declared.isdigit() and int(declared) <= cap)):
            return await self.app(scope, receive, send)  # no body, or a small one (the server holds it to its length)
        if await has_credentials(headers):
            return await self.app(scope, receive, send)
        return await _refuse(scope, send, 413 if scope["path"] in EXEMPT else 401, cap)
