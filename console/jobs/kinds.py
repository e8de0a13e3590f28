"""The registry of job kinds. Each app registers its kinds in its AppConfig.ready();
later features add kinds here without touching the Job base."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from console.jobs.models import Job


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    handler: str  # dotted path of `fn(job) -> result`, run inside a worker
    on_failed: Callable[[Job], None] | None = None  # clean up after failure or cancel
    validate: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None  # params, user → cleaned params
    queue: str | Callable[[dict[str, Any]], str] = "jobs"  # or, from the params, e.g. a deployment's queue
    user_creatable: bool = False  # may POST /api/jobs/ create it directly?
    soft_time_limit: int | None = None  # seconds; past it the job's next report() fails it (JobTimedOut)
    time_limit: int | None = None  # seconds; a prefork worker kills the task, the reaper fails the job
    retry_on_worker_lost: bool = False  # idempotent kinds: a redelivery after its worker died runs it again
    # a run carries on where a dead one stopped (batch, predict): the reaper queues it again instead of failing it
    resumable: bool = False
    private: bool = False  # params/results hold user content (prompts): only its creator and maintainers see it
    series_axes: tuple[str, str] | None = None  # reports live Job.series: the (x, y) axis titles of its chart


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> None:
    KINDS[kind.name] = kind


def get(name: str) -> JobKind:
    return KINDS[name]


def handler_for(name: str) -> Callable[[Job], Any]:
    return import_string(KINDS[name].handler)


def private_kinds() -> list[str]:
    return [name for name, kind in KINDS.items() if kind.private]


def queue_for(name: str, params: dict[str, Any]) -> str:
    queue = KINDS[name].queue
    return queue(params) if callable(queue) else queue


def on_failed(job: Job) -> None:
    kind = KINDS.get(job.kind)
    if kind is not None and kind.on_failed is not None:
        kind.on_failed(job)


def visibility_problem() -> str | None:
    """Why the broker's visibility timeout is too short for some registered kind, or None.

    With acks_late a task stays unacknowledged while it runs; Redis hands it to another worker once the
    visibility timeout passes, so it must outlast the longest kind's hard limit plus a margin."""
    from django.conf import settings

    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    limits = {name: kind.time_limit for name, kind in KINDS.items() if kind.time_limit}
    limits["(any job)"] = settings.TAUON_JOB_HARD_LIMIT_S
    name, longest = max(limits.items(), key=lambda item: item[1])
    needed = longest + settings.TAUON_VISIBILITY_MARGIN_S
    if timeout < needed:
        return (f"The broker's visibility timeout ({timeout} s) is shorter than the hard limit of job kind "
                f"'{name}' ({longest} s) plus a {settings.TAUON_VISIBILITY_MARGIN_S} s margin: a running job "
                f"would be delivered twice. Raise TAUON_JOB_HARD_LIMIT_S to at least {longest}.")
    return None

