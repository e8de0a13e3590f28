"""Who may call the inference API, and how often: an API key (`Authorization: Bearer`), or the
browser session (with its CSRF token, for the playground), of a user with role `user` or above,
within the key's (or the site's default) requests-per-minute and tokens-per-minute limits."""

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
from console.accounts.models import ApiKey, hash_key
from console.accounts.revocation import EPOCH_KEY
from console.inference.errors import ApiError
from console.inference.gateway import redis_client
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
    bucket: str  # whose minute the rate limits count

    def limits(self) -> tuple[int, int]:
        if self.key is not None:
            return self.key.limits()
        return settings.TAUON_KEY_REQUESTS_PER_MINUTE, settings.TAUON_KEY_TOKENS_PER_MINUTE


def caller_for(user: Any, key: Any) -> Caller:
    """The caller of a request DRF already authenticated (key: `request.auth`)."""
    if isinstance(key, ApiKey):
        return Caller(user, key, f"key:{key.pk}")
    return Caller(user, None, f"user:{user.pk}")


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


def _window() -> tuple[int, int]:
    now = time.time()
    minute = int(now // 60)
    return minute, max(1, int(60 - now % 60))


async def check_rate(caller: Caller) -> None:
    """Count this request against the caller's minute; refuse with 429 and Retry-After when over."""
    rpm, tpm = caller.limits()
    minute, retry_after = _window()
    r = redis_client()
    if rpm:
        pipe = r.pipeline(transaction=False)
        pipe.incr(f"tauon:rl:req:{caller.bucket}:{minute}")
        pipe.expire(f"tauon:rl:req:{caller.bucket}:{minute}", 120)
        count, _ = await pipe.execute()
        if int(count) > rpm:
            raise ApiError(429, f"Rate limit reached: this key may make {rpm} requests per minute; "
                                f"retry in {retry_after} s.", code="rate_limit_requests", retry_after=retry_after)
    if tpm:
        used = int(await r.get(f"tauon:rl:tok:{caller.bucket}:{minute}") or 0)
        if used >= tpm:
            raise ApiError(429, f"Rate limit reached: this key may use {tpm} tokens per minute and has used "
                                f"{used}; retry in {retry_after} s.", code="rate_limit_tokens",
                           retry_after=retry_after)


async def charge_tokens(caller: Caller, tokens: int) -> None:
    if tokens <= 0 or not caller.limits()[1]:
        return
    minute, _ = _window()
    pipe = redis_client().pipeline(transaction=False)
    pipe.incrby(f"tauon:rl:tok:{caller.bucket}:{minute}", tokens)
    pipe.expire(f"tauon:rl:tok:{caller.bucket}:{minute}", 120)
    await pipe.execute()
