"""The serving side of one worker process (see the package's docstring).

Its thread reconciles every heartbeat: it claims a replica slot for each wanted deployment (at most
`replicas` slots each, shared through Redis by every worker on every machine), has the replica load the
version the deployment should serve, starts consuming the deployment's queue once the engine is ready,
has it reload beside the old engine when the followed alias moves, and lets go of deployments that are
stopped, deleted or scaled down. A second thread cancels requests whose client went away or whose time
is up."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from console.deployments import live
from console.deployments.choices import ReplicaStatus
from console.deployments.models import Deployment, Replica
from workers.serving.replica import Runner

log = logging.getLogger(__name__)

# The one Host of this worker process, installed by the bootstep that made it (workers/celery.py) and
# removed when it stops; None in a process that serves nothing (a jobs worker, a test).
_installed: Host | None = None


def install(host: Host) -> None:
    global _installed
    _installed = host


def uninstall(host: Host) -> None:
    global _installed
    if _installed is host:
        _installed = None


def installed() -> Host | None:
    return _installed


def hosted(name: str) -> Runner | None:
    """This process's replica of deployment `name`, or None when it hosts none."""
    host = _installed
    return host.runner(name) if host is not None else None


def _settings() -> tuple[float, int]:
    from django.conf import settings

    return float(settings.TAUON_REPLICA_HEARTBEAT_S), int(settings.TAUON_REPLICA_LOST_S)


class Host:
    """The serving side of one worker process: its replicas, their slots, heartbeats and cancel flags.

    Plain Python over the database and Redis. Celery reaches it only through `consume(queue, on) -> bool`
    (start or stop taking a deployment queue's tasks; consumers.py gives the worker's broadcast control),
    and the bootstep that makes one also `install`s it, so the `tauon.infer` task and the explain job
    find this process's replicas through `hosted(name)`."""

    def __init__(self, hostname: str, scope: list[str] | None, consume: Callable[[str, bool], bool]):
        self.hostname, self.scope = hostname, scope  # scope None: every deployment
        self.consume = consume
        self.runners: dict[str, Runner] = {}
        self.stopping_runners: list[Runner] = []
        self.dirty: set[Runner] = set()
        self.requests: dict[str, tuple[list[Any], float]] = {}  # request id → (handles, deadline)
        self.requests_lock = threading.Lock()
        self.stopped = threading.Event()
        self.heartbeat_s, self.lost_s = _settings()

    def start(self) -> None:
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
        every = Deployment.everything  # a tune's trial deployments too
        if self.scope is None:
            names = list(every.filter(stopped=False).values_list("name", flat=True))
        else:  # the named ones, and the trial deployments of tunes of them
            names = self.scope + list(every.filter(tune_job__params__deployment__in=self.scope)
                                      .values_list("name", flat=True))
        deployments = {d.name: d for d in every.filter(name__in=names).select_related("model", "version")}
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
            if runner.current is not None:
                runner.admission.configure(dep.config, runner.current.engine)
            if runner.current is not None and not runner.consuming:
                runner.consuming = self.consume(runner.queue, True)
        self._finish_stopping()

    def _let_go(self, runner: Runner) -> None:
        self.runners.pop(runner.name, None)
        live.client().zrem(live.live_key(runner.name), runner.key)
        live.client().hdel(live.admit_key(runner.name), runner.key)
        if runner.consuming and not any(r.queue == runner.queue for r in self.runners.values()):
            self.consume(runner.queue, False)
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

    def _beat(self) -> None:
        r = live.client()
        now = time.time()
        pipe = r.pipeline(transaction=False)
        pipe.set(live.host_key(self.hostname), json.dumps({"scope": self.scope}), ex=self.lost_s)  # "a worker is up"
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
