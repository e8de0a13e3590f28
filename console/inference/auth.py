"""Who may call the inference API, and how often: an API key (`Authorization: Bearer`), or the
browser session (with its CSRF token, for the playground), of a user with role `user` or above,
within the user's requests-per-minute and tokens-per-minute budget (shared by all their keys and their
browser session), or the key's own when an admin gave it its own limits (console/inference/limits.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from redis.exceptions import RedisError

from console.accounts.choices import Role
from console.accounts.models import ApiKey, hash_key, user_limits
from console.accounts.revocation import EPOCH_KEY
from console.inference.errors import ApiError
from console.inference.gateway import redis_client
from console.inference.limits import Budget
from console.inference.ttl import TTLCache

# Keys cached per process; a change to any key or user moves the epoch in Redis (console/accounts/revocation.py),
# checked at most every EPOCH_CHECK_S, which drops the cache. The TTL bounds the delay should Redis not answer.
KEYS: TTLCache[ApiKey] = TTLCache(ttl_s=float(settings.TAUON_KEY_CACHE_S))
EPOCH_CHECK_S = 0.25


@dataclass(slots=True)
class _Epoch:
    value: str | None = None
    checked: float = float("-inf")


_EPOCH = _Epoch()


async def _drop_changed_keys() -> None:
    """Clear KEYS when a key or user changed since the last look (one Redis GET per EPOCH_CHECK_S)."""
    now = time.monotonic()
    if now - _EPOCH.checked < EPOCH_CHECK_S:
        return
    _EPOCH.checked = now
    try:
        value = await redis_client().get(EPOCH_KEY)
    except RedisError:
        return
    value = value.decode() if isinstance(value, bytes) else value
    if value != _EPOCH.value:
        KEYS.clear()
        _EPOCH.value = value


@dataclass(slots=True)
class Caller:
    user: Any
    key: ApiKey | None  # None: the browser session
    budget: Budget  # whose minute the rate limits count


def caller_for(user: Any, key: Any) -> Caller:
    """The caller of a request DRF already authenticated (key: `request.auth`). A key shares its user's
    budget unless an admin gave it its own limits."""
    if isinstance(key, ApiKey) and key.own_limits:
        rpm, tpm = key.limits()
        return Caller(user, key, Budget(f"key:{key.hashed_key[:24]}", rpm, tpm, own=True))
    rpm, tpm = user_limits(user)
    return Caller(user, key if isinstance(key, ApiKey) else None, Budget(f"user:{user.pk}", rpm, tpm))


def _csrf_refusal(request: HttpRequest) -> Any:
    return CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})  # type: ignore[arg-type]


async def authenticate(request: HttpRequest) -> Caller:
    header = request.headers.get("Authorization", "")
    if not header:
        user = await request.auser()
        if user.is_authenticated:
            if request.method not in ("GET", "HEAD") and await sync_to_async(_csrf_refusal)(request) is not None:
                raise ApiError(403, "CSRF check failed: send the X-CSRFToken header with the browser session.",
                               code="csrf_failed")
            if not user.has_role(Role.USER):
                raise ApiError(403, "Your account has no role; an admin must give it role 'user' or above.",
                               code="insufficient_role")
            return caller_for(user, None)
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError(401, "Send your API key as 'Authorization: Bearer <key>' (create one under API keys).",
                       code="invalid_api_key")
    await _drop_changed_keys()
    key = await KEYS.get_or_load(hash_key(raw.strip()), lambda: sync_to_async(ApiKey.authenticate)(raw.strip()))
    if key is not None and key.expires_at is not None and key.status != "active":
        key = None  # expired while cached
    if key is None:
        raise ApiError(401, "Invalid, expired or revoked API key.", code="invalid_api_key")
    if not key.user.has_role(Role.USER):
        raise ApiError(403, "This key's user has no role; an admin must give it role 'user' or above.",
                       code="insufficient_role")
    return caller_for(key.user, key)
