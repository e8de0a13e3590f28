"""Serving that needs no worker: telling a wedged engine from a busy one, and the replica host run without Celery."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.serving_rows import deploy
from workers.serving import ProgressWatch


def test_an_engine_with_work_and_no_new_steps_for_the_limit_counts_as_stalled():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=True, now=100.0)
    assert not watch.stalled(tokens=5, has_work=True, now=109.0)
    assert watch.stalled(tokens=5, has_work=True, now=110.5)


def test_an_idle_engine_or_one_that_steps_is_never_stalled():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=False, now=100.0)
    assert not watch.stalled(tokens=5, has_work=False, now=200.0)  # idle for long: fine
    assert not watch.stalled(tokens=5, has_work=True, now=205.0)
    assert not watch.stalled(tokens=6, has_work=True, now=214.0)  # progress resets the clock
    assert not watch.stalled(tokens=6, has_work=True, now=223.0)
    assert watch.stalled(tokens=6, has_work=True, now=224.5)


@pytest.mark.django_db(transaction=True)
def test_a_host_without_celery_claims_a_slot_serves_and_lets_go_when_the_deployment_stops(bob, llama_dir):
    """The host is plain Python: Celery reaches it only through `consume(queue, on)`; here that records."""
    from console.deployments import live
    from console.deployments.models import Deployment, Replica
    from workers.serving import Host, hosted, install, uninstall

    deployment = deploy("host-unit", llama_dir, owner=bob, wait=False)
    consumed: list[tuple[str, bool]] = []
    host = Host("unit@test", ["host-unit"], lambda queue, on: consumed.append((queue, on)) is None)

    def beat() -> bool:
        host.reconcile()
        host._beat()
        return bool(consumed)

    install(host)
    try:
        wait_for(beat, timeout=60, what="the replica to load and take its queue")
        assert consumed == [(deployment.queue, True)] and hosted("host-unit") is host.runner("host-unit")
        assert live.live_replicas("host-unit") == 1
        assert Replica.objects.get(deployment=deployment).status == "ready"
        Deployment.objects.filter(pk=deployment.pk).update(stopped=True)
        host.reconcile()
        assert consumed[-1] == (deployment.queue, False) and hosted("host-unit") is None
        wait_for(lambda: (host.reconcile(), host._save_rows(),
                          Replica.objects.get(deployment=deployment).status == "stopped")[-1],
                 timeout=30, what="the replica to drain and stop")
        assert live.live_replicas("host-unit") == 0
    finally:
        host.stop()
        uninstall(host)
    assert hosted("host-unit") is None
