"""Shared fixtures: named users (alice admin, bob maintainer, charlie user, dave no role),
API clients authenticated by real API keys, a real Celery worker process, the storage root."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from rest_framework.test import APIClient

from console import embedded_redis

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def storage_root() -> Iterator[Path]:
    """Every test session gets its own artifact root, shared with the worker process."""
    path = Path(tempfile.mkdtemp(prefix="tauon-storage-"))
    settings.TAUON_STORAGE = path
    yield path
    shutil.rmtree(path, ignore_errors=True)
    embedded_redis.shutdown()  # last of all: the worker fixture has stopped by now


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> None:
    """PBKDF2 costs ~0.5 s per user on these cores; tests only need passwords to round-trip."""
    from django.contrib.auth.hashers import get_hashers

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()


def make_user(username: str, role: str, **extra: Any):  # type: ignore[no-untyped-def]
    from console.accounts.models import User

    return User.objects.create_user(username=username, password=f"{username}-Pass-123!", role=role, **extra)


@pytest.fixture
def alice(db):  # type: ignore[no-untyped-def]
    return make_user("alice", "admin")


@pytest.fixture
def bob(db):  # type: ignore[no-untyped-def]
    return make_user("bob", "maintainer")


@pytest.fixture
def charlie(db):  # type: ignore[no-untyped-def]
    return make_user("charlie", "user")


def key_client(user) -> APIClient:  # type: ignore[no-untyped-def]
    from console.accounts.models import ApiKey

    _, raw = ApiKey.issue(user, name=f"{user.username}-test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def admin_api(alice) -> APIClient:  # type: ignore[no-untyped-def]
    return key_client(alice)


@pytest.fixture
def maintainer_api(bob) -> APIClient:  # type: ignore[no-untyped-def]
    return key_client(bob)


@pytest.fixture
def user_api(charlie) -> APIClient:  # type: ignore[no-untyped-def]
    return key_client(charlie)


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture
def llm(bob):  # type: ignore[no-untyped-def]
    """A registered text-generation model owned by bob, with no versions yet."""
    from console.registry.models import Model

    return Model.objects.create(name="tiny-llm", task="text-generation", owner=bob)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A tiny random Llama folder (safetensors + tokenizer), built once per session."""
    from tests.modelfactory import tiny_llama_dir

    return tiny_llama_dir(tmp_path_factory.mktemp("llama") / "tiny-llama")


@pytest.fixture(scope="session")
def slow_llama_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A wider tiny Llama with a 4k context: slow enough (a few hundred tokens/s) to interrupt mid-answer."""
    from tests.modelfactory import tiny_llama_dir

    return tiny_llama_dir(tmp_path_factory.mktemp("slow") / "slow-llama", hidden_size=256, intermediate_size=768,
                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=4096)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The bundled SmolLM2-135M-Instruct as the registry stores it (safetensors), converted once and
    cached across sessions where /tmp allows."""
    from bench.models import SMOLLM2_CACHE, convert_smollm2

    if (SMOLLM2_CACHE / "model.safetensors").is_file():
        return SMOLLM2_CACHE
    if SMOLLM2_CACHE.parent.is_dir() and os.access(SMOLLM2_CACHE.parent, os.W_OK):
        return convert_smollm2(SMOLLM2_CACHE)
    return convert_smollm2(tmp_path_factory.mktemp("smollm2") / "smollm2")


def _database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{s['NAME']}"


_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test session dies, so a killed run leaves nothing behind
    (Linux's PR_SET_PDEATHSIG)."""
    _LIBC.prctl(1, signal.SIGTERM)


class ChildProcess:
    """A process the tests start in its own process group, logging to a temp file."""

    proc: subprocess.Popen[bytes] | None = None
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class WorkerProcess(ChildProcess):
    """A real `celery -A workers worker` process on the test database and the test Redis."""

    def __init__(self, name: str, queues: str = "default,jobs", concurrency: int = 1, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        self.name, self.queues, self.concurrency, self.extra = name, queues, concurrency, list(extra)
        self.extra_env = env or {}
        self.log_path = Path(tempfile.mkstemp(prefix=f"tauon-{name}-", suffix=".log")[1])

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DATABASE_URL=_database_url(), REDIS_URL=settings.REDIS_URL,
                   TAUON_STORAGE=str(settings.TAUON_STORAGE), DJANGO_SETTINGS_MODULE="console.settings",
                   TAUON_JOB_HEARTBEAT_S="1", PYTHONUNBUFFERED="1",
                   TAUON_JOB_KIND_MODULES="tests.job_kinds")
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        cmd = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "threads",
               "--concurrency", str(self.concurrency), "-Q", self.queues, "-n", f"{self.name}@%h",
               "--without-gossip", "--without-mingle", "-l", "INFO", *self.extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=self.log_path.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready." in self.log():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            time.sleep(0.2)
        raise RuntimeError(f"worker did not become ready:\n{self.log()}")


def purge_queues() -> None:
    from workers.celery import app

    with app.connection_for_write() as conn:
        for queue in ("default", "jobs"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - a queue that never existed
                pass


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker) -> Iterator[WorkerProcess]:  # type: ignore[no-untyped-def]
    """One real worker for the session. Tests that use it need django_db(transaction=True)."""
    with django_db_blocker.unblock():
        purge_queues()
        worker = WorkerProcess("tests").start()
    yield worker
    worker.stop()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


SERVING_ENV = {"TAUON_REPLICA_LOST_S": "3"}
# The deployments the session's serving worker hosts; tests that start workers of their own use other names.
SESSION_DEPLOYMENTS = ("chat", "slow", "full", "small", "embed", "classify", "promote", "stop-start",
                       "pg-tiny", "pg-cls", "pg-smollm2", "int8-child", "tagger")


def serving_worker(name: str, deployments: str = "all", concurrency: int = 16) -> WorkerProcess:
    """A worker that hosts replicas of `deployments` (threads pool, so requests share one engine)."""
    return WorkerProcess(name, queues=f"serve.{name}", concurrency=concurrency,
                         extra=("--deployments", deployments), env=SERVING_ENV)


class WebServer(ChildProcess):
    """The real ASGI app under uvicorn, on the test database and Redis, on a free port."""

    def __init__(self) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="tauon-web-", suffix=".log")[1])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        env = WorkerProcess("web").env()
        cmd = [sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1",
               "--port", str(self.port), "--lifespan", "off", "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log_path.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"web server exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"web server did not start:\n{self.log()}")


@pytest.fixture(scope="session")
def web_server(django_db_setup, django_db_blocker) -> Iterator[WebServer]:  # type: ignore[no-untyped-def]
    """uvicorn serving the console (and /v1) for the session; tests need django_db(transaction=True)."""
    with django_db_blocker.unblock():
        server = WebServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def serving(django_db_setup, django_db_blocker, web_server) -> Iterator[WorkerProcess]:  # type: ignore[no-untyped-def]
    """One serving worker for the session (hosting SESSION_DEPLOYMENTS) beside the web server."""
    with django_db_blocker.unblock():
        worker = serving_worker("serving", ",".join(SESSION_DEPLOYMENTS)).start()
    yield worker
    worker.stop()


# --- the browser (headless Debian Chromium through Playwright) ------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
IMPORT_TIMEOUT_MS = 180_000


@contextmanager
def browser_page(base_url: str, monkeypatch: Any, viewport: tuple[int, int] = (1280, 900),
                 timeout_ms: int = 20_000) -> Iterator[Any]:
    """A page in headless Debian Chromium on `base_url`."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop on this thread; the test's ORM calls around it
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(base_url=base_url, viewport={"width": viewport[0], "height": viewport[1]})
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        yield page
        context.close()
        browser.close()
        # Inside sync_playwright the test's ORM calls ran in another context (greenlet), so on another
        # connection than pytest-django's; close it, or it keeps the test database from being dropped.
        connections.close_all()


@pytest.fixture
def page(live_server, monkeypatch) -> Iterator:  # type: ignore[no-untyped-def]
    with browser_page(live_server.url, monkeypatch) as page:
        yield page


def log_in(page, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-Pass-123!")
    page.click("button:has-text('Log in')")
    page.wait_for_url("**/")


