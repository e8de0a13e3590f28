"""Celery glue for the serving host: start or stop consuming a deployment's queue on this worker.

Celery's remote control (a broadcast answered by the named worker) rather than a direct call, so the
change goes through the worker's own consumer like `celery control add_consumer` would."""

from __future__ import annotations

import logging
from typing import Any

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
