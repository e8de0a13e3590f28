"""Prometheus metrics: what the web side saw of each request (counted here), and what the replicas
report in their heartbeats (read from Redis at scrape time)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from console.deployments import live
from console.deployments.models import Deployment

REQUESTS = Counter("tauon_requests", "Inference requests answered", ["deployment", "endpoint", "status"])
ERRORS = Counter("tauon_errors", "Inference requests that ended in an error", ["deployment", "code"])
TTFT = Histogram("tauon_time_to_first_token_seconds", "Time from request to first token", ["deployment"],
                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
TPOT = Histogram("tauon_time_per_output_token_seconds", "Time per generated token after the first", ["deployment"],
                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
LATENCY = Histogram("tauon_request_duration_seconds", "Whole request time", ["deployment", "endpoint"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
PROMPT_TOKENS = Counter("tauon_prompt_tokens", "Prompt tokens processed", ["deployment"])
GENERATED_TOKENS = Counter("tauon_generated_tokens", "Tokens generated", ["deployment"])


class ReplicaCollector(Collector):
    """Per-replica engine figures from the heartbeats in Redis: queue depth, running batch, KV use, tok/s."""

    FIELDS = {  # heartbeat field: (metric, help)
        "waiting": ("tauon_queue_depth", "Requests waiting in the replica's engine queue"),
        "running": ("tauon_running_sequences", "Sequences in the replica's running batch"),
        "batch_size": ("tauon_batch_size", "Sequences in the replica's last engine step"),
        "kv_cache_usage": ("tauon_kv_cache_usage_ratio", "Share of the replica's KV cache in use"),
        "tokens_per_s": ("tauon_replica_tokens_per_second", "Tokens per second over the last seconds"),
    }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only (so registering does not query the database)."""
        yield GaugeMetricFamily("tauon_ready_replicas", "Replicas serving", labels=["deployment"])
        yield GaugeMetricFamily("tauon_inflight_requests", "Requests admitted and not finished", labels=["deployment"])
        for metric, text in self.FIELDS.values():
            yield GaugeMetricFamily(metric, text, labels=["deployment", "replica"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {f: GaugeMetricFamily(m, h, labels=["deployment", "replica"]) for f, (m, h) in self.FIELDS.items()}
        replicas = GaugeMetricFamily("tauon_ready_replicas", "Replicas serving", labels=["deployment"])
        inflight = GaugeMetricFamily("tauon_inflight_requests", "Requests admitted and not finished",
                                     labels=["deployment"])
        r = live.client()
        for name in Deployment.objects.values_list("name", flat=True):
            keys = r.zrangebyscore(live.live_key(name), time.time(), "+inf")
            replicas.add_metric([name], len(keys))
            inflight.add_metric([name], live.inflight(name))
            for key, raw in zip(keys, r.mget([live.replica_key(k) for k in keys]) if keys else [], strict=True):
                if not raw:
                    continue
                figures = json.loads(raw)
                for field, family in families.items():
                    if field in figures:
                        family.add_metric([name, key[:8]], float(figures[field]))
        yield replicas
        yield inflight
        yield from families.values()


REGISTRY.register(ReplicaCollector())
