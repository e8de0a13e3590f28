"""Start-up checks for jobs (run by `manage.py up`, `migrate`, `check`; workers assert the same)."""

from __future__ import annotations

from typing import Any

from django.core import checks

from console.jobs.kinds import visibility_problem


@checks.register(checks.Tags.compatibility)
def visibility_timeout_outlasts_every_kind(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problem = visibility_problem()
    return [checks.Error(problem, id="tauon.E001")] if problem else []
