"""Job kinds used only by the tests; the test worker imports this via TAUON_JOB_KIND_MODULES."""

from __future__ import annotations

from console.jobs import kinds
from console.jobs.models import Job


def sleep_handler(job: Job) -> dict:
    import time

    steps = int(job.params.get("steps", 3))
    for i in range(steps):
        job.report((i + 1) / steps, f"step {i + 1}/{steps}", log=f"did step {i + 1}")
        time.sleep(float(job.params.get("sleep", 0.05)))
    if job.params.get("boom"):
        raise RuntimeError("boom requested")
    return {"steps": steps}


kinds.register(kinds.JobKind(name="test-sleep", handler="tests.job_kinds.sleep_handler", queue="jobs"))
