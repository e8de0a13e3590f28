"""Two worker processes serve one deployment: they share the load, and when one is killed (SIGKILL)
mid-answer its client gets an error within seconds while the other keeps serving."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from console.deployments.models import Deployment, Replica
from tests.conftest import serving_worker, wait_for
from tests.serving_rows import deploy

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_workers(django_db_blocker):  # type: ignore[no-untyped-def]
    workers = [serving_worker(f"failover{i}", "failover", concurrency=8).start() for i in (1, 2)]
    yield workers
    for worker in workers:
        worker.stop()


def test_two_workers_share_a_deployment_and_a_killed_one_fails_its_request_fast(
        web_server, two_workers, slow_llama_dir, charlie, bob):
    from console.accounts.models import ApiKey

    deploy("failover", slow_llama_dir, owner=bob, replicas=2, config={"max_tokens": 3000})
    assert Deployment.objects.get(name="failover").status_and_reason() == ("ready", "2 of 2 replicas ready.")
    http = httpx.Client(base_url=web_server.url, timeout=60,
                        headers={"Authorization": f"Bearer {ApiKey.issue(charlie, name='t')[1]}"})
    # long enough that one worker's 8 threads are busy while 16 requests wait: both workers must take some
    short = {"model": "failover", "prompt": "Hi", "max_tokens": 64, "ignore_eos": True, "temperature": 0}

    def ask(_: int) -> str:
        response = http.post("/v1/completions", json=short)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 64
        return response.headers["X-Tauon-Replica"]

    with ThreadPoolExecutor(8) as pool:
        served_by = list(pool.map(ask, range(16)))
    keys = set(Replica.objects.filter(deployment__name="failover").values_list("key", flat=True))
    assert set(served_by) == keys and len(keys) == 2  # both replicas took requests

    long = {**short, "max_tokens": 3000, "stream": True}
    with http.stream("POST", "/v1/completions", json=long) as response:
        replica = Replica.objects.get(key=response.headers["X-Tauon-Replica"])
        victim = next(w for w in two_workers if replica.worker.startswith(w.name + "@"))
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        victim.kill(signal.SIGKILL)
        killed = time.perf_counter()
        events = [json.loads(line[5:]) for line in lines if line.startswith("data:") and line != "data: [DONE]"]
    waited = time.perf_counter() - killed
    assert events and "error" in events[-1], events[-3:]
    assert events[-1]["error"]["code"] == "replica_lost" and waited < 10, waited

    assert ask(0) != replica.key  # the other replica keeps serving
    wait_for(lambda: Replica.objects.get(pk=replica.pk).state == "lost", timeout=10, what="the replica shown lost")
    status, reason = Deployment.objects.get(name="failover").status_and_reason()
    assert status == "ready" and "1 lost" in reason


def test_scaling_up_lets_an_idle_worker_take_a_replica_and_scaling_down_drains_one(
        web_server, two_workers, llama_dir, bob, maintainer_api):
    from console.deployments import live

    deploy("failover", llama_dir, owner=bob, replicas=1)
    time.sleep(2)  # both workers had time to try: only one slot exists
    assert live.live_replicas("failover") == 1
    assert maintainer_api.patch("/api/deployments/failover/", {"replicas": 2}, format="json").status_code == 200
    wait_for(lambda: live.live_replicas("failover") == 2, timeout=30, what="a second replica")
    workers = set(Replica.objects.filter(deployment__name="failover", status="ready").values_list("worker", flat=True))
    assert len(workers) == 2
    maintainer_api.patch("/api/deployments/failover/", {"replicas": 1}, format="json")
    wait_for(lambda: live.live_replicas("failover") == 1, timeout=15, what="the surplus replica to leave")
    wait_for(lambda: Replica.objects.filter(deployment__name="failover", status="stopped", slot=1).exists(),
             timeout=15, what="the surplus replica to stop")
    assert Deployment.objects.get(name="failover").status_and_reason() == ("ready", "1 of 1 replicas ready.")


def test_a_fresh_worker_loads_two_deployments_created_at_once(web_server, llama_dir, bob, django_db_blocker):
    from console.registry.bundled import by_name
    from tests.serving_rows import wait_ready

    chat = deploy("pair-chat", llama_dir, owner=bob, wait=False)
    embed = deploy("pair-embed", by_name("all-minilm-l6-v2").path(), task="embeddings", owner=bob, wait=False)
    worker = serving_worker("pair", "pair-chat,pair-embed").start()
    try:
        wait_ready(chat, timeout=25)  # before a failed load would be retried (30 s)
        wait_ready(embed, timeout=25)
    finally:
        worker.stop()
    assert not Replica.objects.filter(status="failed").exists()


@pytest.fixture
def two_single_thread_workers(django_db_blocker):  # type: ignore[no-untyped-def]
    """Two workers of one thread each: a request beyond the one each runs waits in the worker that prefetched it."""
    workers = [serving_worker(f"claim{i}", "claim-lost", concurrency=1).start() for i in (1, 2)]
    yield workers
    for worker in workers:
        worker.kill(signal.SIGKILL)


def test_a_request_waiting_in_a_worker_that_dies_before_starting_it_gets_replica_lost_at_once(
        web_server, two_single_thread_workers, slow_llama_dir, charlie, bob):
    """tauon.infer is at most once: a message prefetched by a worker that dies comes back only after the broker's
    visibility timeout. The worker claimed it as it arrived, so the client gets 503 replica_lost within seconds,
    not a 504 at the deployment's timeout, though another replica of the deployment is alive."""
    from console.accounts.models import ApiKey
    from console.deployments import live

    deploy("claim-lost", slow_llama_dir, owner=bob, replicas=2, config={"max_tokens": 3000, "timeout_s": 300})
    http = httpx.Client(base_url=web_server.url, timeout=300,
                        headers={"Authorization": f"Bearer {ApiKey.issue(charlie, name='t')[1]}"})
    body = {"model": "claim-lost", "prompt": "Once", "max_tokens": 3000, "ignore_eos": True, "temperature": 0}
    answers: list[tuple[float, int, str]] = []

    def ask(_: int) -> None:
        response = http.post("/v1/completions", json=body)
        answers.append((time.monotonic(), response.status_code, response.json().get("error", {}).get("code", "")))

    r = live.client()

    def waiting_in_a_worker() -> str | None:
        """A request some worker received but has not started (its stream has no event): that worker's name."""
        for request_id in r.zrange(live.inflight_key("claim-lost"), 0, -1):
            claimant = r.get(live.claim_key(request_id))
            if claimant and not r.exists(live.stream_key(request_id)):
                return claimant
        return None

    pool = ThreadPoolExecutor(6)
    try:
        for i in range(6):  # one running in each worker, the others prefetched behind them
            pool.submit(ask, i)
        claimant = wait_for(waiting_in_a_worker, timeout=60, what="a request waiting in a worker")
        victim = next(w for w in two_single_thread_workers if claimant.startswith(w.name + "@"))
        held = [rid for rid in r.zrange(live.inflight_key("claim-lost"), 0, -1) if r.get(live.claim_key(rid)) == claimant]
        victim.kill(signal.SIGKILL)
        killed = time.monotonic()
        def lost() -> list[tuple[float, str]]:
            return [(round(at - killed, 1), code) for at, status, code in answers if status != 200]

        wait_for(lambda: len(lost()) >= len(held), timeout=15, what="the answers of the killed worker's requests")
        assert len(held) >= 2 and all(code == "replica_lost" for _, code in lost()), lost()  # the one it ran too
        assert all(after < 8 for after, _ in lost()), lost()  # its heartbeat expires in 3 s (TAUON_REPLICA_LOST_S)
    finally:
        for worker in two_single_thread_workers:  # the survivor's long answers end too (as replica_lost)
            worker.kill(signal.SIGKILL)
        pool.shutdown(wait=True)
        http.close()
