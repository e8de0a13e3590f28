"""Job handlers: `fn(job) -> result`, run inside a worker by workers.tasks.run_job."""

from __future__ import annotations

from typing import Any

from console.jobs.models import Job


def import_version(job: Job) -> dict[str, Any]:
    from console.registry.importing import run_import

    return run_import(job)
