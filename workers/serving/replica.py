"""One deployment's replica in this process: its slot, its engine(s) and its `Replica` row.

A `Runner` loads a version in a thread of its own, switches new requests to it once loaded, keeps the
engine it replaced until that engine's last request has finished (then closes it), and drains on stop.
Plain Python over the database row; the `Host` (host.py) decides when it loads and when it goes."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from console.deployments.choices import ReplicaStatus
from console.deployments.config import engine_config
from console.deployments.models import Deployment, Replica
from workers.serving.admission import AdaptiveAdmission

if TYPE_CHECKING:
    from workers.serving.host import Host

log = logging.getLogger(__name__)
RETRY_FAILED_LOAD_S = 30.0
_LOADING = threading.Lock()


@dataclass
class Loaded:
    """One engine serving one version under one engine config."""

    engine: Any
    version_id: int
    version_number: int
    signature: str
    inflight: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # the deployment's engine config it was built from


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
        self.admission = AdaptiveAdmission(self.name, self.key, host.lost_s)
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
                engine = Engine.from_pretrained(path, with_headroom(engine_config(config)), task=self.task)
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
            old, self.current = self.current, Loaded(engine, version_id, number, signature,
                                                     config=dict(config.get("engine", {})))
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
            current = self.current
        engine = current.engine if current else None
        figures: dict[str, Any] = {"t": time.time(), "replica": self.key, "slot": self.slot}
        if current is not None:  # what it serves now (after a hot swap: the new engine, once it took over)
            figures["engine"] = current.config
        if engine is not None and hasattr(engine, "stats"):
            s = engine.stats()
            figures.update(running=s.running, waiting=s.waiting, batch_size=s.batch_size,
                           kv_cache_usage=round(s.kv_cache_usage, 4), tokens_per_s=round(s.tokens_per_s, 2),
                           generated_tokens=s.generated_tokens, steps=s.steps)
            figures["stalled"] = self.progress.stalled(s.progress, bool(s.running or s.waiting),
                                                       cpu_s=s.cpu_s)
        figures.update(self.admission.figures())
        return figures


class NotServing(Exception):
    pass


class ProgressWatch:
    """Tells a wedged engine from a busy one: it has requests but computed no token (prompt or answer)
    for `limit_s` seconds (a live process with a stuck engine must not keep taking requests). A long
    prompt is prefilled in chunks, so a busy engine computes tokens every step.

    Wall time alone drops healthy replicas on a loaded machine, where one step can outlast the limit, so:
    - a step still running counts as progress: the engine's loop thread used CPU (`cpu_s`, at least
      BUSY_CPU_S since it was last seen busy), which a thread blocked for good does not;
    - both limits stretch with the machine's load per core (a step takes that much longer);
    - an engine busy on the CPU that computes no token for `hard_limit_s` (10 × the limit) is wedged too
      (a loop that spins)."""

    BUSY_CPU_S = 0.2

    def __init__(self, limit_s: float, hard_limit_s: float | None = None):
        self.limit_s = limit_s
        self.hard_limit_s = hard_limit_s if hard_limit_s is not None else 10 * limit_s
        self.tokens = -1
        self.since = self.busy_at = time.monotonic()  # last new tokens; last sign of work (tokens or CPU)
        self.cpu_mark: float | None = None

    def stalled(self, tokens: int, has_work: bool, now: float | None = None, cpu_s: float | None = None,
                load: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if tokens != self.tokens or not has_work:
            self.tokens, self.since, self.busy_at, self.cpu_mark = tokens, now, now, cpu_s
            return False
        if cpu_s is not None:
            if self.cpu_mark is not None and cpu_s - self.cpu_mark >= self.BUSY_CPU_S:
                self.busy_at = now  # its step is still running: computing, not wedged
            if self.cpu_mark is None or self.busy_at == now:
                self.cpu_mark = cpu_s
        stretch = max(1.0, load_per_core() if load is None else load)
        return now - self.busy_at > self.limit_s * stretch or now - self.since > self.hard_limit_s * stretch


def load_per_core() -> float:
    """The machine's 1-minute load average per CPU core (1.0: every core busy); 0.0 where unknown."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def with_headroom(config: Any) -> Any:
    """The web side admits at most max_num_seqs + max_queue requests per replica, and a burst of them can
    all wait before the engine's loop runs any; the engine's own queue takes twice that, so admitted
    requests (and cancelled ones not yet reaped) never meet its limit."""
    return dataclasses.replace(config, max_queue=2 * (config.max_queue + config.max_num_seqs))


def _close(engine: Any) -> None:
    try:
        engine.close()
    except Exception:  # noqa: BLE001 - closing must not take the host down
        log.exception("closing an engine failed")


