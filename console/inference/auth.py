"""Who may call the inference API, and how often: an API key (`Authorization: Bearer`) of a user with
role `user` or above, within its requests-per-minute and tokens-per-minute limits."""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.http import HttpRequest

from console.accounts.choices import Role
from console.accounts.models import ApiKey
from console.inference.errors import ApiError
from console.inference.gateway import redis_client


async def authenticate(request: HttpRequest) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError(401, "Send your API key as 'Authorization: Bearer <key>' (create one under API keys).",
                       code="invalid_api_key")
    key = await sync_to_async(ApiKey.authenticate)(raw.strip())
    if key is None:
        raise ApiError(401, "Invalid, expired or revoked API key.", code="invalid_api_key")
    if not key.user.has_role(Role.USER):
        raise ApiError(403, "This key's user has no role; an admin must give it role 'user' or above.",
                       code="insufficient_role")
    return key


def _window() -> tuple[int, int]:
    now = time.time()
    minute = int(now // 60)
    return minute, max(1, int(60 - now % 60))


async def check_rate(key: ApiKey) -> None:
    """Count this request against the key's minute; refuse with 429 and Retry-After when over."""
    rpm, tpm = key.limits()
    minute, retry_after = _window()
    r = redis_client()
    if rpm:
        pipe = r.pipeline(transaction=False)
        pipe.incr(f"tauon:rl:req:{key.pk}:{minute}")
        pipe.expire(f"tauon:rl:req:{key.pk}:{minute}", 120)
        count, _ = await pipe.execute()
        if int(count) > rpm:
            raise ApiError(429, f"Rate limit reached: this key may make {rpm} requests per minute; "
                                f"retry in {retry_after} s.", code="rate_limit_requests", retry_after=retry_after)
    if tpm:
        used = int(await r.get(f"tauon:rl:tok:{key.pk}:{minute}") or 0)
        if used >= tpm:
            raise ApiError(429, f"Rate limit reached: this key may use {tpm} tokens per minute and has used "
                                f"{used}; retry in {retry_after} s.", code="rate_limit_tokens",
                           retry_after=retry_after)


async def charge_tokens(key: ApiKey, tokens: int) -> None:
    if tokens <= 0 or not key.limits()[1]:
        return
    minute, _ = _window()
    pipe = redis_client().pipeline(transaction=False)
    pipe.incrby(f"tauon:rl:tok:{key.pk}:{minute}", tokens)
    pipe.expire(f"tauon:rl:tok:{key.pk}:{minute}", 120)
    await pipe.execute()
