"""Celery glue for the serving host: start or stop consuming a deployment's queue on this worker, and claim
each request this worker receives.

Celery's remote control (a broadcast answered by the named worker) rather than a direct call, so the
change goes through the worker's own consumer like `celery control add_consumer` would."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from redis.exceptions import RedisError

from console.deployments import live

log = logging.getLogger(__name__)


class Consumers:
    """`consume(queue, on) -> bool` for `Host`: True once this worker confirmed the change."""

    def __init__(self, app: Any, hostname: str):
        self.app, self.hostname = app, hostname

    def __call__(self, queue: str, on: bool) -> bool:
        control = self.app.control
        call = control.add_consumer if on else control.cancel_consumer
        try:
            replies = call(queue, destination=[self.hostname], reply=True, timeout=2.0)
        except Exception:  # noqa: BLE001 - the host retries next beat
            log.exception("%s consumer for %s", "adding" if on else "cancelling", queue)
            return False
        return bool(replies)


@signals.task_received.connect
def claim_request(request: Any = None, **_: Any) -> None:
    """A `tauon.infer` message has reached this serving worker (prefetched: it may wait for a free thread
    before it starts): record which worker holds it, until its deadline. Should the worker die before it
    accepts the request, the web side sees the claim's worker gone (its host key expired) and answers
    `replica_lost` at once, rather than waiting out the request's timeout while the message, taken off the
    queue, waits for the broker's visibility timeout (tauon.infer is at most once)."""
    from workers.serving.host import installed

    host = installed()
    if request is None or host is None or request.name != "tauon.infer":
        return
    try:
        _deployment, request_id, work = request.args
        ttl = int(float(work["deadline"]) - time.time()) + 60
        if ttl > 0:
            live.client().set(live.claim_key(request_id), host.hostname, ex=ttl)
    except (RedisError, KeyError, TypeError, ValueError):
        log.warning("could not claim request %s", getattr(request, "id", "?"), exc_info=True)
