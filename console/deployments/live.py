"""What deployments share through Redis, between the web side and the workers: which replicas are
alive, which requests are in flight, the token streams, cancel flags and recent figures.

Every key starts with `tauon:`. The web side uses redis.asyncio and the workers plain redis-py;
both take the key names and scripts from here."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import redis
from django.conf import settings

STREAM_TTL_S = 600  # a token stream outlives its request by this much, for late readers
FIGURES_KEPT = 600  # samples per deployment (one per replica heartbeat)


def stream_key(request_id: str) -> str:
    return f"tauon:gen:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"tauon:cancel:{request_id}"


def opener_key(request_id: str) -> str:
    return f"tauon:opener:{request_id}"  # the id of the process that admitted the request; expires


def process_key(opener_id: str) -> str:
    return f"tauon:process:{opener_id}"  # an opener process's lease: its command line; expires unless renewed


def claim_key(request_id: str) -> str:
    return f"tauon:claim:{request_id}"  # the worker (host key's name) that received the request; expires


def replica_key(replica: str) -> str:
    return f"tauon:replica:{replica}"  # the replica's latest figures; expires when it stops beating


def live_key(deployment: str) -> str:
    return f"tauon:live:{deployment}"  # zset: ready replica key → expiry (epoch seconds)


def inflight_key(deployment: str) -> str:
    return f"tauon:inflight:{deployment}"  # zset: request id → deadline (epoch seconds)


def slot_key(deployment: str, slot: int) -> str:
    return f"tauon:slot:{deployment}:{slot}"


def admit_key(deployment: str) -> str:
    # hash: replica key → that replica's adaptive-admission cap (engine/latency_governor.py); a replica
    # without a field (no target) takes its full capacity
    return f"tauon:admit:{deployment}"


def feeders_key(deployment: str) -> str:
    return f"tauon:feeders:{deployment}"  # zset: "owner:job" of a batch/predict job feeding it → expiry (workers/feeding.py)


def host_key(hostname: str) -> str:
    return f"tauon:host:{hostname}"  # a serving worker process: {"scope": [names] or null for all}; expires


def figures_key(deployment: str) -> str:
    return f"tauon:figures:{deployment}"


# Admit a request if the deployment has a live replica and a free place among the sum, over its live
# replicas, of each one's cap: its capacity (max_num_seqs + max_queue, ARGV[2]), or less while its adaptive
# admission has narrowed it (its field in KEYS[3]). A sum, not replicas × the smallest cap: one replica
# narrowing (slow, or sharing its CPU) must not shrink what the others take, and not the last writer's cap
# either. A place is bound to the process that opened it (KEYS[4] ← ARGV[5], its opener id): when the
# deployment looks full, the places whose opener's lease (process_key, renewed every second while it lives)
# has lapsed are freed first, so a killed web process or batch job holds no place past OPENER_LEASE_S, even
# for a request no worker ever ran. (Those keys are named from ARGV[6..7], not KEYS: fine on one Redis, not
# on a cluster.) Returns -1 (no replica), 0 (full) or 1 (admitted).
ADMIT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local replicas = redis.call('ZRANGE', KEYS[1], 0, -1)
if #replicas == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local full = tonumber(ARGV[2])
local hashed = redis.call('TYPE', KEYS[3]).ok == 'hash'
local total = 0
for _, replica in ipairs(replicas) do
  local cap = full
  if hashed then
    local narrowed = tonumber(redis.call('HGET', KEYS[3], replica) or '')
    if narrowed and narrowed < cap then cap = narrowed end
  end
  total = total + cap
end
if redis.call('ZCARD', KEYS[2]) >= total and ARGV[6] then
  for _, rid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local opener = redis.call('GET', ARGV[6] .. rid)
    if opener and redis.call('EXISTS', ARGV[7] .. opener) == 0 then redis.call('ZREM', KEYS[2], rid) end
  end
end
if redis.call('ZCARD', KEYS[2]) >= total then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[2], 3600)
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[5], 'EXAT', math.ceil(tonumber(ARGV[4])) + 60) end
return 1
"""
OPENER_LEASE_S = 10


def admit_args(deployment: str, request_id: str, deadline: float, capacity: int,
               opener_id: str) -> tuple[Any, ...]:
    """ADMIT's numkeys, keys and arguments for one request (`redis.eval(ADMIT, *admit_args(...))`)."""
    return (4, live_key(deployment), inflight_key(deployment), admit_key(deployment), opener_key(request_id),
            time.time(), capacity, request_id, deadline, opener_id, opener_key(""), process_key(""))


# Keep a slot only while we own it.
REFRESH_SLOT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RELEASE_SLOT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_client: redis.Redis | None = None


_opener: tuple[int, str] | None = None  # (pid, opener id)
_opener_lock = threading.Lock()


def opener() -> str:
    """This process's id as an opener of requests (host:pid:random). The first call takes the process's lease
    (Redis I/O) and starts a daemon thread that renews it every second, so its places live as long as it does
    (ADMIT); later calls only read the id. A forked child gets an id (and a thread) of its own."""
    global _opener
    with _opener_lock:
        known = opener_if_known()
        if known is None:
            known = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            _renew(known)
            _opener = (os.getpid(), known)
            threading.Thread(target=_keep_lease, args=(known,), name="tauon-opener-lease", daemon=True).start()
        return known


def opener_if_known() -> str | None:
    """This process's opener id once `opener()` made it (no I/O: for an event loop), else None."""
    known = _opener
    return known[1] if known is not None and known[0] == os.getpid() else None


def _renew(opener_id: str) -> None:
    client().set(process_key(opener_id), " ".join(sys.argv)[:200], ex=OPENER_LEASE_S)


def _keep_lease(opener_id: str) -> None:
    while opener_if_known() == opener_id:
        time.sleep(1.0)
        try:
            _renew(opener_id)
        except redis.RedisError:  # Redis is away (every request fails meanwhile); at exit, gone before this thread
            logging.getLogger(__name__).debug("could not renew this process's lease", exc_info=True)


def client() -> redis.Redis:
    """This process's (thread-safe, pooled) redis-py client."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True, health_check_interval=30)
    return _client


def figures(deployment: str, since: float = 0.0) -> list[dict[str, Any]]:
    """Recent samples, oldest first: {t, replica, running, waiting, batch_size, kv_cache_usage, tokens_per_s}."""
    raw = client().lrange(figures_key(deployment), 0, FIGURES_KEPT - 1)
    rows = [json.loads(r) for r in reversed(raw)]
    return [r for r in rows if r.get("t", 0) > since]


def workers_for(deployment: str) -> int:
    """Serving worker processes alive now whose scope takes `deployment` (all, or it by name)."""
    r = client()
    count = 0
    for key in r.scan_iter(match=host_key("*"), count=200):
        raw = r.get(key)
        if raw is None:
            continue
        scope = json.loads(raw).get("scope")
        count += scope is None or deployment in scope
    return count


def live_replicas(deployment: str) -> int:
    r = client()
    r.zremrangebyscore(live_key(deployment), "-inf", time.time())
    return int(r.zcard(live_key(deployment)))


def inflight(deployment: str) -> int:
    r = client()
    r.zremrangebyscore(inflight_key(deployment), "-inf", time.time())
    return int(r.zcard(inflight_key(deployment)))
