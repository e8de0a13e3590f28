"""`python manage.py import_bundled [--sync | --wait] [--only NAME]`: register the bundled models.

Idempotent: a model that already has a ready or importing version from the same package version
is left alone; a failed one is retried. By default the import jobs go to the worker; `--sync`
runs them here (what `make up` does before it starts the worker)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.jobs.choices import TERMINAL
from console.jobs.models import Job
from console.registry.bundled import BUNDLED, BundledMissing, by_name, register
from console.registry.choices import VersionStatus
from console.registry.importing import ImportRefused
from console.registry.models import ModelVersion


class Command(BaseCommand):
    help = "Register the bundled models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) and import them."

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--sync", action="store_true", help="run the imports in this process, not in a worker")
        mode.add_argument("--wait", action="store_true", help="enqueue, then wait until the worker has finished them")
        parser.add_argument("--only", action="append", metavar="NAME", help="import only this bundled model (repeatable)")
        parser.add_argument("--timeout", type=float, default=900, help="seconds --wait waits (default 900)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            chosen = [by_name(n) for n in options["only"]] if options["only"] else list(BUNDLED)
        except KeyError as exc:
            raise CommandError(exc.args[0]) from exc
        sync, failures, waiting = options["sync"], [], []
        for bundled in chosen:
            started = time.monotonic()
            try:
                version, created = register(bundled, enqueue=not sync)
            except (BundledMissing, ImportRefused) as exc:
                raise CommandError(f"{bundled.name}: {exc}") from exc
            if not created:
                self.stdout.write(f"{bundled.name}: version {version.number} from {version.source_ref} is already "
                                  f"{version.status}; nothing to do.")
                continue
            if not sync:
                self.stdout.write(f"{bundled.name}: version {version.number} from {version.source_ref} created; "
                                  f"import job #{version.import_job_id} queued for the worker.")
                waiting.append(version)
                continue
            from workers.tasks import run_job  # the worker's own code path, run here

            run_job.apply(args=[version.import_job_id])
            version.refresh_from_db()
            self._report(version, time.monotonic() - started, failures)
        if options["wait"] and waiting:
            self._wait(waiting, options["timeout"], failures)
        if failures:
            raise CommandError("; ".join(failures))

    def _wait(self, versions: list[ModelVersion], timeout: float, failures: list[str]) -> None:
        started = time.monotonic()
        pending = {v.pk: v for v in versions}
        while pending and time.monotonic() - started < timeout:
            for pk in list(pending):
                version = ModelVersion.objects.select_related("model").get(pk=pk)
                job = Job.objects.filter(pk=version.import_job_id).first()
                if version.status != VersionStatus.IMPORTING or (job and job.status in TERMINAL):
                    self._report(version, time.monotonic() - started, failures)
                    del pending[pk]
            time.sleep(0.5)
        for version in pending.values():
            failures.append(f"{version.model.name} v{version.number} still importing after {timeout:.0f}s "
                            f"(is a worker running?)")

    def _report(self, version: ModelVersion, seconds: float, failures: list[str]) -> None:
        name = version.model.name
        if version.status == VersionStatus.READY:
            self.stdout.write(f"{name}: version {version.number} ready in {seconds:.1f}s ({version.architecture}, "
                              f"{version.parameter_count:,} parameters, {version.dtype}, {version.total_size:,} bytes).")
        else:
            reason = version.status_reason or "the import job did not finish"
            failures.append(f"{name} v{version.number} {version.status}: {reason}")
            self.stderr.write(f"{name}: version {version.number} {version.status}: {reason}")
