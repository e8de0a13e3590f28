"""A job kind whose hard limit outlasts the broker's visibility timeout (start-up must refuse it)."""

from __future__ import annotations

from console.jobs import kinds

kinds.register(kinds.JobKind(name="test-forever", handler="tests.job_kinds.sleep_handler", time_limit=10**9))
