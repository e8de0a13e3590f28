"""Running the product: health and readiness, production settings, and
`manage.py up` end to end (migrate, admin once, web + worker, clean stop)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from tests.conftest import ROOT


def run_manage(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"TAUON_DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"}}
    env.update(TAUON_ENV="production", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="tauon.example.com",
               REDIS_URL=settings.REDIS_URL, DJANGO_SETTINGS_MODULE="console.settings")
    env.update(overrides)
    return env


# --- health and readiness -------------------------------------------------------------------------------

def test_healthz_answers_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_answers_200_when_the_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "deployments": "ok"}}


@pytest.mark.django_db
def test_readyz_answers_503_naming_a_deployment_that_no_replica_serves(client, bob):
    from console.deployments.models import Deployment
    from console.registry.models import Alias
    from tests.api_rows import make_model, make_version

    model = make_model("tiny-llm", owner=bob)
    Alias.move(model, "production", make_version(model), actor=bob)
    Deployment.create(bob, name="nobody-serves-me", model=model, alias="production")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["deployments"] == "no ready replica: nobody-serves-me"
    Deployment.objects.filter(name="nobody-serves-me").update(stopped=True)  # stopped on purpose: ready again
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_answers_503_naming_redis_when_redis_is_unreachable(client, settings):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ConnectionError")


# --- production settings --------------------------------------------------------------------------------

def test_production_settings_pass_check_deploy_at_warning_level():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = production_env()
    del env["SECRET_KEY"]
    result = run_manage("check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY must be set when TAUON_ENV=production" in result.stderr


@pytest.mark.parametrize(("overrides", "says"), [
    ({"TAUON_DEBUG": "1"}, "TAUON_DEBUG must be off when TAUON_ENV=production"),
    ({"SECRET_KEY": "x" * 49}, "SECRET_KEY must be at least 50 characters"),
], ids=["debug-on", "short-secret-key"])
def test_production_refuses_to_start_with_debug_on_or_a_short_secret_key(overrides, says):
    result = run_manage("check", env=production_env(**overrides))
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr and says in result.stderr


@pytest.mark.parametrize(("overrides", "debug"), [
    ({"TAUON_ENV": "development"}, "False"), ({"TAUON_ENV": "development", "TAUON_DEBUG": "1"}, "True"),
    ({}, "False"),
], ids=["development", "development-asked-for", "production"])
def test_debug_is_off_unless_asked_for_in_every_environment(overrides, debug):
    env = production_env(**overrides)
    env.pop("DEBUG", None)
    script = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == debug


def test_the_visibility_timeout_outlasts_the_longest_job_kind_and_start_up_checks_it():
    from console.jobs import kinds

    longest = max(settings.TAUON_JOB_HARD_LIMIT_S, *(k.time_limit or 0 for k in kinds.KINDS.values()))
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] >= longest + settings.TAUON_VISIBILITY_MARGIN_S
    # fine-tuning's own limit, longer than the generic one, still fits
    env = production_env(TAUON_JOB_HARD_LIMIT_S="600", TAUON_FINETUNE_HARD_LIMIT_S="90000")
    script = "import django; django.setup(); from django.conf import settings; " \
             "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'])"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split()[-1] == str(90000 + settings.TAUON_VISIBILITY_MARGIN_S), result.stderr
    # a kind registered with a longer hard limit than the broker allows: `check` (run by `up`) refuses to start
    refused = run_manage("check", env=production_env(TAUON_JOB_KIND_MODULES="tests.long_job_kinds"))
    assert refused.returncode != 0, refused.stdout
    assert "tauon.E001" in refused.stderr and "'test-forever'" in refused.stderr
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "threads", "-Q",
                             "nothing", "--without-gossip", "--without-mingle"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=production_env(TAUON_JOB_KIND_MODULES="tests.long_job_kinds"))
    assert worker.returncode == 1 and "'test-forever'" in worker.stderr, worker.stderr[-2000:]


def test_production_probes_answer_over_plain_http_while_pages_redirect_to_https():
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client(HTTP_HOST='tauon.example.com')\n"
        "print(c.get('/healthz').status_code, c.get('/login/').status_code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=production_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "301"]


# --- `manage.py up` end to end --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class UpProcess:
    """`python manage.py up` on its own var/ folder (SQLite, embedded Redis), output in a file."""

    def __init__(self, var: Path, port: int):
        self.var, self.port = var, port
        self.log_path = var / f"up-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "TAUON_STORAGE"}}
        env.update(TAUON_VAR=str(var), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(port), "--workers", "1", "--skip-bundled"],
            cwd=ROOT, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_up(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited early ({self.proc.returncode}):\n{self.log()}")
            if "Tauon is up at" in self.log():
                return
            time.sleep(0.5)
        raise AssertionError(f"up did not come up within {timeout}s:\n{self.log()}")

    def embedded_redis_pid(self) -> int:
        registry = json.loads((self.var / "redis" / "redis.db.settings").read_text())
        return int(Path(registry["pidfile"]).read_text().strip())

    def processes(self) -> list[psutil.Process]:
        """Everything `up` started: its descendants and the embedded Redis server (a daemon)."""
        return psutil.Process(self.proc.pid).children(recursive=True) + [psutil.Process(self.embedded_redis_pid())]

    def terminate(self, timeout: float = 90) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for process in psutil.Process(self.proc.pid).children(recursive=True):
                process.kill()
            self.proc.kill()
            self.proc.wait()


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_and_stop(var: Path) -> str:
    """Start `up`, check it serves and runs a worker, stop it with SIGTERM, check nothing is left."""
    port = free_port()
    up = UpProcess(var, port)
    try:
        up.wait_until_up()
        assert get_status(f"http://127.0.0.1:{port}/readyz") == 200
        assert get_status(f"http://127.0.0.1:{port}/healthz") == 200
        started = up.processes()
        commands = [" ".join(p.cmdline()) for p in started]
        assert any("uvicorn console.asgi:application" in c for c in commands), commands
        assert any("celery -A workers worker -B" in c for c in commands), commands
        assert any("--pool threads" in c and "--deployments all" in c for c in commands), commands
        assert any("redis-server" in c for c in commands), commands
        assert up.terminate() == 0, up.log()
        psutil.wait_procs([p for p in started if alive(p)], timeout=10)
        assert [p.pid for p in started if alive(p)] == [], f"left running after SIGTERM:\n{up.log()}"
        assert get_status(f"http://127.0.0.1:{port}/healthz") is None
        assert "Stopped." in up.log()
        assert "log in as admin" in up.log()
        return up.log()
    finally:
        up.kill()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_up_serves_prints_the_admin_password_once_and_stops_every_child_on_sigterm():
    with tempfile.TemporaryDirectory(prefix="tauon-up-") as tmp:
        var = Path(tmp)
        first = start_and_stop(var)
        assert first.count("Admin password:") == 1, first
        assert "Admin user: admin (created)" in first

        second = start_and_stop(var)
        assert "Admin password:" not in second, second
        assert "Admin user: admin (already exists" in second


def test_up_refuses_a_port_that_is_taken(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(TAUON_VAR=str(tmp_path))
        result = run_manage("up", "--port", str(port), "--skip-bundled", env=env)
    assert result.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert not (tmp_path / "tauon.sqlite3").exists(), "nothing is set up before the port is known to be free"


# --- configuration is documented ------------------------------------------------------------------------

def test_docker_env_example_lists_every_environment_variable_the_console_reads():
    import re

    read: set[str] = set()
    for path in (ROOT / "console").rglob("*.py"):
        source = path.read_text()
        read |= set(re.findall(r"env_(?:str|bool|int)\(\s*\"([A-Z0-9_]+)\"", source))
        read |= set(re.findall(r"os\.environ\.get\(\s*\"([A-Z0-9_]+)\"", source))
    read -= {"DJANGO_SETTINGS_MODULE"}
    listed = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", (ROOT / "docker" / ".env.example").read_text(), re.MULTILINE))
    assert {"DATABASE_URL", "REDIS_URL", "TAUON_ENV", "SECRET_KEY", "ALLOWED_HOSTS", "TAUON_STORAGE"} <= read
    assert sorted(read - listed) == []
