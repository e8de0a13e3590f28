"""One trial of a `tune` job, measured through the serving stack: the trial's engine settings become a
transient internal deployment (`tune-<job>-<trial>`, one replica, hidden from people: Deployment.tune_job),
a serving worker loads it like any other (never the live replicas: their traffic does not share its
engine), and the workload goes through the same gateway as /v1 and the batch job (console.inference.gateway
.Call: admission, the deployment's Celery queue, the worker's thread pool, the token stream in Redis), so
a trial's figures are what a client of a deployment with those settings would see. The deployment is
deleted afterwards, whatever happened (a failure, a cancel); console.deployments.tuning.remove_trials
clears a job's leftovers (a redelivered, cancelled or reaped job)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from console.deployments import live
from console.deployments.choices import ReplicaStatus
from console.deployments.config import normalize
from console.deployments.models import Deployment, Replica
from console.inference.errors import ApiError
from console.inference.gateway import Call, close_redis_client
from engine.tuning import Workload, percentile
from workers.feeding import BUSY

log = logging.getLogger(__name__)
POLL_S = 0.5  # how often waiting checks the replica and the job's cancel flag; progress is reported as often
BUSY_S = 0.2  # pause before sending again a request the replica had no room for (429/503)
Report = Callable[[float, str], None]  # may raise (a cancel)


class TrialFailed(Exception):
    """The trial could not be measured (no replica in time, a load or request that failed): its reason."""


@contextlib.contextmanager
def trial_deployment(job: Any, number: int, version: Any, engine: dict[str, Any],
                     timeout_s: int) -> Iterator[Deployment]:
    """The trial's internal deployment of `version` under the engine settings, deleted on the way out."""
    name = Deployment.trial_name(job.pk, number)
    Deployment.everything.filter(name=name, tune_job_id=job.pk).delete()  # an earlier delivery's
    if Deployment.everything.filter(name=name).exists():
        raise TrialFailed(f"a deployment named '{name}' exists that is not this tune's; delete or rename it")
    deployment = Deployment.everything.create(
        name=name, model=version.model, version=version, replicas=1, tune_job=job, created_by=job.created_by,
        config=normalize({"engine": engine, "timeout_s": timeout_s}))
    try:
        yield deployment
    finally:
        Deployment.everything.filter(pk=deployment.pk).delete()


def wait_ready(deployment: Deployment, timeout_s: float, report: Report) -> float:
    """Seconds until a replica of the trial deployment serves; TrialFailed when it failed to load or none
    was ready in time."""
    started = time.monotonic()
    while True:
        rows = list(Replica.objects.filter(deployment=deployment).values_list("status", "status_reason"))
        if any(s == ReplicaStatus.READY for s, _ in rows) and live.live_replicas(deployment.name):
            return time.monotonic() - started
        failed = [reason for s, reason in rows if s == ReplicaStatus.FAILED]
        if failed:
            raise TrialFailed(f"its replica failed to load: {failed[0]}")
        waited = time.monotonic() - started
        if waited > timeout_s:
            parent = (deployment.tune_job.params or {}).get("deployment")
            hosts = "'all' deployments" + (f" or '{parent}'" if parent else "")
            raise TrialFailed(f"no replica of {deployment.name} was ready within {timeout_s:.0f} s "
                              f"({'loading' if rows else 'no serving worker took it'}; a serving worker "
                              f"hosting {hosts} runs trials)")
        report(0.0, f"waiting for its replica ({waited:.0f} s)")
        time.sleep(POLL_S)


def run_level(deployment: Deployment, workload: Workload, concurrency: int, report: Report) -> dict[str, Any]:
    """The workload through the gateway, closed loop with `concurrency` requests in flight: throughput
    (generated tokens per second of wall time), TTFT p50/p99 and ITL p99 as a client sees them."""
    return asyncio.run(_Level(deployment, workload, concurrency, report).run())


def fresh(prompt: Any, tag: int) -> Any:
    """`prompt` made new to the replica by a leading mark, so that no level serves a prompt an earlier one
    left in a prompt cache (llama.cpp keeps each slot's last prompt and reuses its longest common prefix):
    a workload replayed level after level would otherwise measure cache hits no client would see."""
    if isinstance(prompt, str):
        return f"({tag}) {prompt}"
    if prompt and all(isinstance(t, int) for t in prompt):
        return [10 + tag % 990, *prompt]  # (synthetic prompts draw their ids from 10–999 too)
    first, *rest = prompt
    return [{**first, "content": f"({tag}) {first['content']}"}, *rest]


class _Level:
    tags = itertools.count(secrets.randbelow(10_000))

    def __init__(self, deployment: Deployment, workload: Workload, concurrency: int, report: Report):
        self.deployment, self.concurrency = deployment, concurrency
        tag = next(self.tags)
        self.workload = Workload([fresh(p, tag) for p in workload.prompts], workload.output_tokens,
                                 workload.concurrency)
        self.report = sync_to_async(report)
        self.done: list[tuple[float, float, int]] = []  # (ttft s, total s, tokens) per request

    async def run(self) -> dict[str, Any]:
        todo = list(zip(self.workload.prompts, self.workload.output_tokens, strict=True))
        slots = asyncio.Semaphore(self.concurrency)
        started = time.perf_counter()

        async def one(prompt: Any, n: int) -> None:
            async with slots:
                self.done.append(await self.request(prompt, n))

        tasks = [asyncio.create_task(one(p, n)) for p, n in todo]
        try:
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=POLL_S)
                for task in tasks:  # a request that failed ends the trial at once
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                await self.report(len(self.done) / len(todo),
                                  f"{len(self.done)}/{len(todo)} requests at concurrency {self.concurrency}")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # each closes its call: the worker stops it
            await close_redis_client()
        wall = time.perf_counter() - started
        ttfts = [ttft * 1000 for ttft, _, _ in self.done]
        itls = [(total - ttft) * 1000 / (tokens - 1) for ttft, total, tokens in self.done if tokens > 1]
        tokens = sum(t for _, _, t in self.done)
        return {"concurrency": self.concurrency, "requests": len(self.done),
                "tokens_per_s": tokens / wall if wall else 0.0,
                "ttft_p50_ms": percentile(ttfts, 0.5), "ttft_p99_ms": percentile(ttfts, 0.99),
                "itl_p99_ms": percentile(itls, 0.99) if itls else 0.0, "wall_s": wall, "generated_tokens": tokens}

    async def request(self, prompt: Any, n: int) -> tuple[float, float, int]:
        """(TTFT, total seconds, tokens) of one request, timed from when it is sent, as a client times it."""
        d = self.deployment
        work = {"kind": "generate", "prompt": prompt, "n": 1,
                "params": {"max_new_tokens": n, "temperature": 0.0, "ignore_eos": True, "fit_context": True}}
        while True:
            call = Call(d.name, d.queue, d.config, work)
            sent = time.perf_counter()
            ttft = None
            try:
                await call.open()
                await call.first()
                async for event in call.events():
                    if ttft is None and event["type"] == "delta" and event.get("ids"):
                        ttft = time.perf_counter() - sent
                    if event["type"] == "done":
                        tokens = int(event["usage"]["completion_tokens"])
                        total = time.perf_counter() - sent
                        return (total if ttft is None else ttft), total, tokens
            except ApiError as exc:
                if exc.status not in BUSY or time.time() > call.deadline:
                    raise TrialFailed(f"a request failed with {exc.status}: {exc}") from exc
            finally:
                await call.close()
            await asyncio.sleep(BUSY_S)  # no room or no replica this instant: send it again


def measure(job: Any, number: int, version: Any, engine: dict[str, Any], workload: Workload,
            report: Report) -> dict[str, Any]:
    """One trial through the stack: engine.tuning.search's measure() contract ({"levels": [...], "load_s"})."""
    timeout = int(settings.TAUON_TUNE_REPLICA_TIMEOUT_S)
    request_timeout = max(60, int(settings.TAUON_TUNE_REQUEST_TIMEOUT_S))
    with trial_deployment(job, number, version, engine, request_timeout) as deployment:
        load_s = wait_ready(deployment, timeout, report)
        report(0.0, "warming up")
        run_level(deployment, workload.share(1), 1, lambda f, m: None)  # its first forwards pay one-time costs
        levels = []
        for i, concurrency in enumerate(workload.concurrency):
            def sub(f: float, m: str, i: int = i) -> None:
                report((i + f) / len(workload.concurrency), m)

            levels.append(run_level(deployment, workload, concurrency, sub))
    return {"levels": levels, "load_s": load_s, "runtime": engine.get("runtime")}
