"""Revocation reaches every web process within a second: each caches API keys for /v1
(console/inference/auth.py) and drops its cache when the epoch counter in Redis moves. Anything that
can make a cached key unusable (revoked, deleted, its user deactivated or their role changed) bumps
the counter once its transaction commits."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.db import transaction

from console.deployments.live import client

log = logging.getLogger(__name__)
EPOCH_KEY = "tauon:apikeys:epoch"


def keys_changed() -> None:
    transaction.on_commit(_bump)


def _bump() -> None:
    try:
        client().incr(EPOCH_KEY)
    except redis.RedisError as exc:  # the cache's TTL (TAUON_KEY_CACHE_S) still bounds the delay
        log.warning("could not publish an API key change: %s", exc)


def on_user_saved(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login", "password", "language"}:
        return  # logging in changes nothing a key depends on
    keys_changed()


def on_key_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    keys_changed()
