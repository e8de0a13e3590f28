"""Serving: a worker process hosts one engine replica per deployment it is started for.

`celery -A workers worker --deployments NAME[,NAME…]|all` starts a `Host` (see workers/celery.py).
Its thread reconciles every heartbeat: it claims a replica slot for each wanted deployment (at most
`replicas` slots each, shared through Redis by every worker on every machine), loads the version the
deployment should serve, starts consuming the deployment's queue once the engine is ready, reloads
beside the old engine when the followed alias moves (then drains the old one), and lets go of
deployments that are stopped, deleted or scaled down. The `infer` task, run by the worker's thread
pool, feeds each request into the shared engine so concurrent requests share its batches, and
writes the token deltas to the request's Redis stream."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import shared_task
from django.db import close_old_connections
from django.utils import timezone

from console.deployments import live
from console.deployments.choices import ReplicaStatus
from console.deployments.config import engine_config
from console.deployments.models import Deployment, Replica

log = logging.getLogger(__name__)
RETRY_FAILED_LOAD_S = 30.0
_LOADING = threading.Lock()


def _settings() -> tuple[float, int]:
    from django.conf import settings

    return float(settings.TAUON_REPLICA_HEARTBEAT_S), int(settings.TAUON_REPLICA_LOST_S)


@dataclass
class Loaded:
    """One engine serving one version under one engine config."""

    engine: Any
    version_id: int
    version_number: int
    signature: str
    inflight: int = 0


class Runner:
    """This process's replica of one deployment: its slot, its engine(s), its database row."""

    def __init__(self, host: Host, deployment: Deployment, slot: int, key: str):
        self.host, self.name, self.slot, self.key = host, deployment.name, slot, key
        self.deployment_id = deployment.pk  # a deployment deleted and re-created under its name is a new one
        self.task = deployment.task
        self.queue = deployment.queue
        self.current: Loaded | None = None
        self.retired: list[Loaded] = []  # old engines draining their requests after a switch
        self.loading_signature: str | None = None
        self.failed_signature: str | None = None  # retried after RETRY_FAILED_LOAD_S, or at once on a change
        self.failed_at = 0.0
        self.stopping = False
        self.consuming = False
        self.progress = ProgressWatch(max(10.0, 3 * host.lost_s))
        self.lock = threading.Lock()
        self.row = Replica.objects.create(deployment=deployment, key=self.key, worker=host.hostname,
                                          pid=os.getpid(), slot=slot, status=ReplicaStatus.LOADING)

    # -- engines --
    def wants(self, signature: str) -> bool:
        if self.failed_signature and time.monotonic() - self.failed_at > RETRY_FAILED_LOAD_S:
            self.failed_signature = None
        have = self.current.signature if self.current else None
        return signature not in (have, self.loading_signature, self.failed_signature)

    def load(self, deployment: Deployment, version: Any, signature: str) -> None:
        self.loading_signature = signature
        self.row.version = version
        threading.Thread(target=self._load, name=f"load-{self.name}", daemon=True,
                         args=(version.path, version.id, version.number, deployment.config, signature)).start()

    def _load(self, path: Any, version_id: int, number: int, config: dict[str, Any], signature: str) -> None:
        from engine import Engine

        started = time.perf_counter()
        try:
            with _LOADING:  # one load at a time per process (transformers' lazy imports race across threads)
                engine = Engine.from_pretrained(path, _with_headroom(engine_config(config)), task=self.task)
        except Exception as exc:  # noqa: BLE001 - any failure is the replica's reason
            log.exception("replica %s could not load version %s", self.name, number)
            with self.lock:
                self.loading_signature, self.failed_signature = None, signature
                self.failed_at = time.monotonic()
                if self.current is None:
                    self._set_status(ReplicaStatus.FAILED, f"Loading version {number} failed: "
                                                          f"{exc.__class__.__name__}: {exc}")
            return
        with self.lock:
            self.loading_signature = None
            if self.stopping:
                _close(engine)
                return
            old, self.current = self.current, Loaded(engine, version_id, number, signature)
            if old is not None:
                self.retired.append(old)
            runtime = getattr(engine, "runtime_note", "") or getattr(engine, "runtime", "")
            self._set_status(ReplicaStatus.READY, f"Serving version {number} (loaded in "
                                                  f"{time.perf_counter() - started:.1f} s)"
                                                  + (f" on {runtime}." if runtime else "."))
        log.info("replica %s#%s serves version %s", self.name, self.slot, number)
        self.collect()

    def acquire(self) -> Loaded:
        with self.lock:
            if self.current is None or self.stopping:
                raise NotServing(f"deployment {self.name} is not served by this worker any more")
            self.current.inflight += 1
            return self.current

    def release(self, loaded: Loaded) -> None:
        with self.lock:
            loaded.inflight -= 1
        self.collect()

    def collect(self) -> None:
        """Close retired engines whose last request finished."""
        with self.lock:
            done = [e for e in self.retired if e.inflight <= 0]
            self.retired = [e for e in self.retired if e.inflight > 0]
        for loaded in done:
            _close(loaded.engine)
            log.info("replica %s#%s drained version %s", self.name, self.slot, loaded.version_number)

    def stop(self) -> None:
        """Stop taking requests; the ones in flight finish on the engine they started on."""
        with self.lock:
            self.stopping = True
            if self.current is not None:
                self.retired.append(self.current)
                self.current = None
            self._set_status(ReplicaStatus.DRAINING, "Finishing its requests before it stops.")

    @property
    def drained(self) -> bool:
        with self.lock:
            return self.stopping and not self.retired and self.loading_signature is None

    # -- state --
    def _set_status(self, status: str, reason: str) -> None:
        self.row.status, self.row.status_reason = status, reason
        self.host.dirty.add(self)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            engine = self.current.engine if self.current else None
        figures: dict[str, Any] = {"t": time.time(), "replica": self.key, "slot": self.slot}
        if engine is not None and hasattr(engine, "stats"):
            s = engine.stats()
            figures.update(running=s.running, waiting=s.waiting, batch_size=s.batch_size,
                           kv_cache_usage=round(s.kv_cache_usage, 4), tokens_per_s=round(s.tokens_per_s, 2),
                           generated_tokens=s.generated_tokens, steps=s.steps)
            figures["stalled"] = self.progress.stalled(s.progress, bool(s.running or s.waiting))
        return figures


class NotServing(Exception):
    pass


class ProgressWatch:
    """Tells a wedged engine from a busy one: it has requests but computed no token (prompt or answer)
    for `limit_s` seconds (a live process with a stuck engine must not keep taking requests). A long
    prompt is prefilled in chunks, so a busy engine computes tokens every step."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.tokens = -1
        self.since = time.monotonic()

    def stalled(self, tokens: int, has_work: bool, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if tokens != self.tokens or not has_work:
            self.tokens, self.since = tokens, now
            return False
        return now - self.since > self.limit_s


def _with_headroom(config: Any) -> Any:
    """The web side admits at most max_num_seqs + max_queue requests per replica, and a burst of them can
    all wait before the engine's loop runs any; the engine's own queue takes twice that, so admitted
    requests (and cancelled ones not yet reaped) never meet its limit."""
    import dataclasses

    return dataclasses.replace(config, max_queue=2 * (config.max_queue + config.max_num_seqs))


def _close(engine: Any) -> None:
    try:
        engine.close()
    except Exception:  # noqa: BLE001 - closing must not take the host down
        log.exception("closing an engine failed")


class Host:
    """The serving side of one worker process (one per process, made by the worker's bootstep)."""

    current: Host | None = None

    def __init__(self, app: Any, hostname: str, scope: list[str] | None):
        self.app, self.hostname, self.scope = app, hostname, scope  # scope None: every deployment
        self.runners: dict[str, Runner] = {}
        self.stopping_runners: list[Runner] = []
        self.dirty: set[Runner] = set()
        self.requests: dict[str, tuple[list[Any], float]] = {}  # request id → (handles, deadline)
        self.requests_lock = threading.Lock()
        self.stopped = threading.Event()
        self.heartbeat_s, self.lost_s = _settings()

    def start(self) -> None:
        Host.current = self
        threading.Thread(target=self._run, name="tauon-serving", daemon=True).start()
        threading.Thread(target=self._watch_cancels, name="tauon-cancels", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        for runner in list(self.runners.values()):
            self._let_go(runner)
        deadline = time.monotonic() + 30
        while self.stopping_runners and time.monotonic() < deadline:
            self._finish_stopping()
            time.sleep(0.1)
        self._save_rows()

    def runner(self, name: str) -> Runner | None:
        return self.runners.get(name)

    # -- the loop --
    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                close_old_connections()
                self.reconcile()
                self._beat()
            except Exception:  # noqa: BLE001 - keep beating through a database or Redis hiccup
                log.exception("serving loop")
            self.stopped.wait(self.heartbeat_s)

    def reconcile(self) -> None:
        names = self.scope if self.scope is not None else list(
            Deployment.objects.filter(stopped=False).values_list("name", flat=True))
        deployments = {d.name: d for d in Deployment.objects.filter(name__in=names).select_related("model", "version")}
        for name, runner in list(self.runners.items()):
            dep = deployments.get(name)
            if (dep is None or dep.pk != runner.deployment_id or dep.stopped or runner.slot >= dep.replicas
                    or not self._keep_slot(runner)):
                self._let_go(runner)
        self._finish_stopping()
        for name, dep in deployments.items():
            if dep.stopped or any(r.name == name and r.row.status != ReplicaStatus.FAILED
                                  for r in self.stopping_runners):
                continue  # (a new replica of it waits until the one going away has drained)
            runner = self.runners.get(name)
            if runner is None:
                claimed = self._claim_slot(dep)
                if claimed is None:
                    continue  # enough replicas elsewhere
                runner = self.runners[name] = Runner(self, dep, *claimed)
            target = dep.target_version()
            if target is None or target.status != "ready":
                continue
            signature = f"{target.id}:{json.dumps(dep.config.get('engine', {}), sort_keys=True)}"
            if runner.wants(signature):
                runner.load(dep, target, signature)
            if runner.current is not None and not runner.consuming:
                runner.consuming = self._consume(runner.queue, True)
        self._finish_stopping()

    def _let_go(self, runner: Runner) -> None:
        self.runners.pop(runner.name, None)
        live.client().zrem(live.live_key(runner.name), runner.key)
        if runner.consuming and not any(r.queue == runner.queue for r in self.runners.values()):
            self._consume(runner.queue, False)
        runner.stop()
        live.client().eval(live.RELEASE_SLOT, 1, live.slot_key(runner.name, runner.slot), runner.key)
        self.stopping_runners.append(runner)

    def _finish_stopping(self) -> None:
        for runner in list(self.stopping_runners):
            runner.collect()
            if runner.drained:
                runner._set_status(ReplicaStatus.STOPPED, "Stopped.")
                self.stopping_runners.remove(runner)

    def _claim_slot(self, dep: Deployment) -> tuple[int, str] | None:
        """The first free slot below `replicas`, taken under a new replica key; None when all are held."""
        key = uuid.uuid4().hex
        for slot in range(dep.replicas):
            if live.client().set(live.slot_key(dep.name, slot), key, nx=True, ex=self.lost_s):
                return slot, key
        return None

    def _keep_slot(self, runner: Runner) -> bool:
        r = live.client()
        key = live.slot_key(runner.name, runner.slot)
        if r.eval(live.REFRESH_SLOT, 1, key, runner.key, self.lost_s):
            return True
        return bool(r.set(key, runner.key, nx=True, ex=self.lost_s))

    def _consume(self, queue: str, on: bool) -> bool:
        control = self.app.control
        call = control.add_consumer if on else control.cancel_consumer
        try:
            replies = call(queue, destination=[self.hostname], reply=True, timeout=2.0)
        except Exception:  # noqa: BLE001 - retried next beat
            log.exception("%s consumer for %s", "adding" if on else "cancelling", queue)
            return False
        return bool(replies)

    def _beat(self) -> None:
        r = live.client()
        now = time.time()
        pipe = r.pipeline(transaction=False)
        for runner in list(self.runners.values()) + self.stopping_runners:
            figures = runner.stats()
            runner.row.stats = figures
            if runner.row.status == ReplicaStatus.FAILED:
                continue  # no heartbeat: its waiting clients learn it is lost
            if figures.get("stalled") and not runner.stopping:
                log.error("replica %s#%s: the engine made no progress with work queued; letting it go",
                          runner.name, runner.slot)
                self._let_go(runner)
                runner._set_status(ReplicaStatus.FAILED, "The engine stopped making progress (wedged); "
                                                         "its requests fail and another replica takes over.")
                continue
            pipe.set(live.replica_key(runner.key), json.dumps(figures), ex=self.lost_s)
            if runner.current is not None and runner.consuming and not runner.stopping:
                pipe.zadd(live.live_key(runner.name), {runner.key: now + self.lost_s})
                pipe.lpush(live.figures_key(runner.name), json.dumps(figures))
                pipe.ltrim(live.figures_key(runner.name), 0, live.FIGURES_KEPT - 1)
        pipe.execute()
        self._save_rows()

    def _save_rows(self) -> None:
        now = timezone.now()
        for runner in list(self.runners.values()) + self.stopping_runners + list(self.dirty):
            row = runner.row
            Replica.objects.filter(pk=row.pk).update(status=row.status, status_reason=row.status_reason,
                                                     stats=row.stats, heartbeat_at=now, version=row.version)
        self.dirty.clear()

    # -- cancel flags and deadlines --
    def watch(self, request_id: str, handles: list[Any], deadline: float) -> None:
        with self.requests_lock:
            self.requests[request_id] = (handles, deadline)

    def unwatch(self, request_id: str) -> None:
        with self.requests_lock:
            self.requests.pop(request_id, None)

    def _watch_cancels(self) -> None:
        """Every 0.2 s: cancel requests whose client went away (the web side set a flag) or whose time is up."""
        while not self.stopped.wait(0.2):
            with self.requests_lock:
                watched = list(self.requests.items())
            if not watched:
                continue
            try:
                flags = live.client().mget([live.cancel_key(rid) for rid, _ in watched])
            except Exception:  # noqa: BLE001
                log.exception("reading cancel flags")
                continue
            now = time.time()
            for (_rid, (handles, deadline)), flag in zip(watched, flags, strict=True):
                if flag or now > deadline:
                    for handle in handles:
                        handle.cancel()


class Events:
    """The request's Redis stream: `accepted`, then `delta`s and `finish` per choice, then `done`;
    or a single `error` (with the HTTP status the web side answers)."""

    def __init__(self, request_id: str):
        self.key = live.stream_key(request_id)
        self.redis = live.client()

    def send(self, kind: str, **data: Any) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.key, {"e": json.dumps({"type": kind, **data})})
        pipe.expire(self.key, live.STREAM_TTL_S)
        pipe.execute()

    def error(self, status: int, code: str, message: str, param: str | None = None) -> None:
        self.send("error", status=status, code=code, message=message, param=param)


@shared_task(name="tauon.infer", ignore_result=True, acks_late=False)
def infer(deployment: str, request_id: str, request: dict[str, Any]) -> None:
    """Serve one request of `deployment`: kind `generate`, `embed` or `predict` (see console/inference)."""
    events = Events(request_id)
    host = Host.current
    runner = host.runner(deployment) if host else None
    if time.time() > request["deadline"]:
        return  # the client has given up already
    if runner is None:
        events.error(503, "replica_unavailable", f"No replica of '{deployment}' on this worker; retry.")
        return
    try:
        loaded = runner.acquire()
    except NotServing as exc:
        events.error(503, "replica_unavailable", f"{exc}; retry.")
        return
    try:
        if request["kind"] == "generate":
            _generate(host, runner, loaded, request_id, request, events)  # type: ignore[arg-type]
        elif request["kind"] == "embed":
            _embed(loaded, request, events)
        else:
            _predict(loaded, request, events)
    except Exception as exc:  # noqa: BLE001 - the client gets the reason instead of a hang
        log.exception("request %s on %s failed", request_id, deployment)
        events.error(500, "engine_error", f"{exc.__class__.__name__}: {exc}")
    finally:
        runner.release(loaded)


def _generate(host: Host, runner: Runner, loaded: Loaded, request_id: str, request: dict[str, Any],
              events: Events) -> None:
    from engine import SamplingParams
    from engine.errors import EngineError, Overloaded

    engine = loaded.engine
    base = dict(request["params"])
    seed = base.pop("seed", None)
    handles: list[Any] = []
    try:
        for i in range(request.get("n", 1)):
            params = SamplingParams(**base, seed=None if seed is None else seed + i)
            handles.append(engine.generate(request["prompt"], params))
    except (EngineError, ValueError) as exc:
        for handle in handles:
            handle.cancel()
        if isinstance(exc, Overloaded):
            events.error(429, "overloaded", f"{exc}; retry shortly.")
        else:
            code = getattr(exc, "code", "invalid_request")
            field = getattr(exc, "param", None) or ("messages" if isinstance(request["prompt"], list)
                                                    and isinstance(request["prompt"][0], dict) else "prompt")
            events.error(400, "context_length_exceeded" if code == "prompt_too_long" else code, str(exc), field)
        return
    host.watch(request_id, handles, request["deadline"])
    try:
        events.send("accepted", replica=runner.key, version=loaded.version_number)
        prompt_tokens = completion_tokens = 0
        for i, handle in enumerate(handles):
            for delta in handle.coalesced():  # deltas that queued up while it sent go as one event
                events.send("delta", i=i, text=delta.text, ids=delta.token_ids,
                            lp=[[t.token, t.logprob, t.top] for t in delta.logprobs])
            done = handle.result()
            prompt_tokens = done.usage.prompt_tokens
            completion_tokens += done.usage.completion_tokens
            events.send("finish", i=i, reason=done.finish_reason, ttft_s=done.ttft_s,
                        completion_tokens=done.usage.completion_tokens)
        events.send("done", usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
    finally:
        host.unwatch(request_id)


def _embed(loaded: Loaded, request: dict[str, Any], events: Events) -> None:
    result = loaded.engine.embed(request["input"])
    events.send("accepted", version=loaded.version_number)
    events.send("done", embeddings=result.vectors.tolist(), usage={"prompt_tokens": result.prompt_tokens,
                                                                   "completion_tokens": 0})


def _predict(loaded: Loaded, request: dict[str, Any], events: Events) -> None:
    engine = loaded.engine
    events.send("accepted", version=loaded.version_number)
    if hasattr(engine, "classify"):
        labels = engine.classify(request["input"], top_k=request.get("top_k"))
        results: list[Any] = [[{"label": x.label, "score": x.score} for x in row] for row in labels]
    elif hasattr(engine, "entities"):
        results = [[{"entity_group": e.entity_group, "score": e.score, "word": e.word, "start": e.start,
                     "end": e.end} for e in row] for row in engine.entities(request["input"])]
    else:
        events.error(400, "wrong_task", "This deployment does not classify; use /v1 for it.")
        return
    events.send("done", results=results, usage={"prompt_tokens": 0, "completion_tokens": 0})

