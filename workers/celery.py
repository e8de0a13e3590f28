"""The Celery app. Start a worker with `celery -A workers worker` (see README).

`--deployments NAME[,NAME…]` or `--deployments all` makes the worker host engine replicas for those
deployments (workers/serving/); give it the threads pool (`--pool threads --concurrency 64`) so
that concurrent requests share one engine's batches."""

import os
import sys

import click
from celery import Celery, bootsteps, signals

from console.jobs.kinds import visibility_problem

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
# Before torch loads: OpenMP threads that spin while idle burn a core the engine needs (a worker's many
# request threads wake them constantly); measured with bench.serving, passive waiting took e2e throughput
# from 0.40× to 0.89× of the engine run directly, at the same CPU cost.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = Celery("tauon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])

app.user_options["worker"].add(click.Option(
    ["--deployments"], default=None, metavar="NAMES",
    help="Serve these deployments (comma-separated names, or 'all' for every deployment not stopped)."))


class ServeDeployments(bootsteps.StartStopStep):
    """Starts the worker's serving host when `--deployments` is given."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, deployments=None, **options):  # type: ignore[no-untyped-def]
        super().__init__(worker, **options)
        names = [n.strip() for n in (deployments or "").split(",") if n.strip()]
        self.scope = None if names == ["all"] else names
        self.enabled = bool(names)
        self.host = None

    def start(self, worker):  # type: ignore[no-untyped-def]
        from workers.serving import Consumers, Host, install

        self.host = Host(worker.hostname, self.scope, Consumers(worker.app, worker.hostname))
        install(self.host)  # the tasks of this process find its replicas through workers.serving.hosted
        self.host.start()

    def stop(self, worker):  # type: ignore[no-untyped-def]
        from workers.serving import uninstall

        if self.host is not None:
            self.host.stop()
            uninstall(self.host)
            self.host = None


app.steps["worker"].add(ServeDeployments)


@signals.worker_init.connect
def check_visibility_timeout(**kwargs):  # type: ignore[no-untyped-def]
    """Refuse to start a worker whose broker would redeliver a job still running (console/jobs/kinds.py).
    SystemExit, since Celery logs and ignores exceptions from signal handlers."""
    problem = visibility_problem()
    if problem:
        print(f"ERROR: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(1)
