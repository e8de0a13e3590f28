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
