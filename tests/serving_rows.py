"""Deployments made directly in the database, served by the real worker processes of the test session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from console.deployments import live
from console.deployments.models import Deployment, Replica
from console.registry.models import Alias, Model, ModelVersion
from tests.api_rows import make_model, make_version
from tests.conftest import wait_for


def stored_version(model: Model, folder: Path, **fields: Any) -> ModelVersion:
    """A ready version whose files are a copy of `folder` (as an import leaves them)."""
    version = make_version(model, **fields)
    shutil.copytree(folder, version.path)
    return version


def deploy(name: str, folder: Path, *, task: str = "text-generation", owner: Any = None,
           config: dict[str, Any] | None = None, replicas: int = 1, wait: bool = True) -> Deployment:
    model = make_model(name=f"{name}-model", task=task, owner=owner)
    version = stored_version(model, folder)
    Alias.move(model, "production", version, actor=owner)
    deployment = Deployment.create(owner, name=name, model=model, alias="production", config=config or {},
                                   replicas=replicas)
    if wait:
        wait_ready(deployment, replicas)
    return deployment


def wait_ready(deployment: Deployment, replicas: int = 1, timeout: float = 60) -> None:
    """Until `replicas` replicas of this very deployment (not one of an earlier test under the same name) serve."""
    def ready() -> bool:
        rows = Replica.objects.filter(deployment=deployment, status="ready").count()
        return rows >= replicas and live.live_replicas(deployment.name) >= replicas

    wait_for(ready, timeout=timeout, what=f"{replicas} ready replica(s) of {deployment.name}")


def places(deployment: str, *logs: Any) -> str:
    """Who holds the places of `deployment` now, for a test's failure message: each request id with its age
    (from its deadline and the deployment's timeout), what its stream says (accepted by which replica, how many
    events, the last), whether it was asked to cancel, which process opened it, and the lines of the given
    process logs (`ChildProcess`es: web server, workers) naming it; the web server logs a request's line when
    its answer ends (its close)."""
    import json
    import time

    r = live.client()
    row = Deployment.objects.filter(name=deployment).first()
    timeout_s = float(row.config["timeout_s"]) if row is not None else 0.0
    rows = []
    for request_id, deadline in r.zrange(live.inflight_key(deployment), 0, -1, withscores=True):
        entries = r.xrange(live.stream_key(request_id))
        events = [json.loads(fields["e"]) for _, fields in entries]
        kinds = [e["type"] for e in events]
        replica = next((e.get("replica") for e in events if e["type"] == "accepted"), None)
        opener = r.get(live.opener_key(request_id))
        last_ago = time.time() - int(entries[-1][0].split("-")[0]) / 1000 if entries else None
        rows.append(f"- {request_id}: opened {timeout_s - (deadline - time.time()):.1f} s ago; {len(events)} events "
                    f"{kinds[:2]}…{kinds[-1:]}" + (f", the last {last_ago:.1f} s ago" if last_ago is not None else "")
                    + f"; replica {replica} (alive: {bool(replica and r.exists(live.replica_key(replica)))}); "
                    f"cancel flag: {bool(r.exists(live.cancel_key(request_id)))}; "
                    f"opened by {opener} (alive: {r.get(live.process_key(opener)) if opener else None})")
        for proc in logs:
            rows += [f"    {proc.log_path.name}: {line[:300]}" for line in proc.log().splitlines() if request_id in line]
    return "\n".join(rows) or "(no places held)"
