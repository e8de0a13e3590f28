"""A request's place (the deployment's admission, console/deployments/live.py's ADMIT) is bound to the process
that opened it: a process that dies (a killed web process, a killed batch job) holds its places no longer than
its lease, even for a request no worker ever ran. Real Redis, the real script."""

from __future__ import annotations

import time

from console.deployments import live


def admit(name: str, request_id: str, opener: str, capacity: int = 2) -> int:
    r = live.client()
    r.zadd(live.live_key(name), {"replica-a": time.time() + 60})
    return int(r.eval(live.ADMIT, *live.admit_args(name, request_id, time.time() + 600, capacity, opener)))


def test_a_full_deployment_frees_the_places_of_an_opener_that_died_and_keeps_a_live_ones():
    name, r = f"places-{time.time_ns()}", live.client()
    alive = live.opener()  # this process: its lease is renewed while it lives
    assert r.ttl(live.process_key(alive)) > 0
    assert [admit(name, f"mine-{i}", alive) for i in range(3)] == [1, 1, 0]  # full: its own places are kept

    other = f"{name}:4242:gone"  # a process that opened two requests, then was killed: its lease lapses
    r.set(live.process_key(other), "a batch job", ex=1)
    full = f"{name}-b"
    assert [admit(full, f"theirs-{i}", other) for i in range(2)] == [1, 1]
    assert admit(full, "mine-early", alive) == 0  # its lease still runs: full
    time.sleep(1.5)
    assert admit(full, "mine", alive) == 1  # the dead opener's places were freed, and this one took one
    assert sorted(r.zrange(live.inflight_key(full), 0, -1)) == ["mine"]
    assert r.get(live.opener_key("mine")) == alive


def test_the_lease_is_renewed_while_the_process_lives():
    opener, r = live.opener(), live.client()
    assert live.opener() == opener == live.opener_if_known()
    r.expire(live.process_key(opener), 1)
    time.sleep(2.2)  # renewed every second
    assert r.ttl(live.process_key(opener)) > 1
