"""Serving that needs no worker: telling a wedged engine from a busy one, and the replica host run without Celery."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.serving_rows import deploy
from workers.serving import ProgressWatch


def test_an_engine_with_work_and_no_new_steps_for_the_limit_counts_as_stalled():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=True, now=100.0, load=0.0)
    assert not watch.stalled(tokens=5, has_work=True, now=109.0, load=0.0)
    assert watch.stalled(tokens=5, has_work=True, now=110.5, load=0.0)


def test_an_idle_engine_or_one_that_steps_is_never_stalled():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=False, now=100.0, load=0.0)
    assert not watch.stalled(tokens=5, has_work=False, now=200.0, load=0.0)  # idle for long: fine
    assert not watch.stalled(tokens=5, has_work=True, now=205.0, load=0.0)
    assert not watch.stalled(tokens=6, has_work=True, now=214.0, load=0.0)  # progress resets the clock
    assert not watch.stalled(tokens=6, has_work=True, now=223.0, load=0.0)
    assert watch.stalled(tokens=6, has_work=True, now=224.5, load=0.0)


def test_a_step_still_running_on_the_cpu_is_not_a_stall_but_a_thread_that_stopped_computing_is():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=True, now=100.0, cpu_s=1.0, load=0.0)
    for t in range(1, 30):  # one long step: no new token for 29 s, but its thread keeps computing
        assert not watch.stalled(tokens=5, has_work=True, now=100.0 + t, cpu_s=1.0 + 0.3 * t, load=0.0)
    cpu = 1.0 + 0.3 * 29
    assert not watch.stalled(tokens=5, has_work=True, now=139.0, cpu_s=cpu + 0.05, load=0.0)  # blocked: no CPU
    assert watch.stalled(tokens=5, has_work=True, now=139.5, cpu_s=cpu + 0.05, load=0.0)  # 10 s after its last work


def test_an_engine_that_spins_without_a_token_is_stalled_at_the_hard_limit():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=True, now=0.0, cpu_s=0.0, load=0.0)
    assert not watch.stalled(tokens=5, has_work=True, now=99.0, cpu_s=99.0, load=0.0)
    assert watch.stalled(tokens=5, has_work=True, now=101.0, cpu_s=101.0, load=0.0)


def test_the_limits_stretch_with_the_load_per_core():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=True, now=100.0, load=3.0)
    assert not watch.stalled(tokens=5, has_work=True, now=129.0, load=3.0)  # 3 runnable threads per core: 30 s
    assert watch.stalled(tokens=5, has_work=True, now=130.5, load=3.0)
    assert watch.stalled(tokens=5, has_work=True, now=112.0, load=0.5)  # below one per core: the plain limit


def test_the_engine_reports_the_cpu_its_loop_thread_used(llama_dir):
    from engine import LLMEngine, SamplingParams

    with LLMEngine.from_pretrained(llama_dir) as engine:
        assert engine.stats().cpu_s is None  # no loop thread before the first request
        engine.generate("Hello there", SamplingParams(max_new_tokens=32, ignore_eos=True)).result(timeout=60)
        first = engine.stats().cpu_s
        assert first is not None and first > 0
        engine.generate("Hello again", SamplingParams(max_new_tokens=32, ignore_eos=True)).result(timeout=60)
        assert engine.stats().cpu_s > first


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
