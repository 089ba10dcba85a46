"""The Prometheus metrics of `roost serve` (`GET /metrics`): requests and latency per route, time to first token,
tokens and tokens/s, the engine's queue, batch and KV cache, and per-upstream series when replicas generate.

Built by `roost.serve.app.build_app`; the generation routes observe into it (roost.serve.generate_api).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from roost.infer.protocol import GenerationEngine

if TYPE_CHECKING:
    from roost.infer.upstream import Upstream


class Metrics:
    def __init__(self, engine: GenerationEngine | None):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("roost_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram(
            "roost_request_seconds",
            "request latency",
            ["route"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.ttft = Histogram(
            "roost_time_to_first_token_seconds",
            "time to first token",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.tokens = Counter("roost_generated_tokens", "generated tokens", registry=r)
        self.tps = Histogram(
            "roost_request_tokens_per_second",
            "decode tokens/s per request",
            registry=r,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
        )
        if engine is not None:
            Gauge("roost_queue_depth", "requests waiting", registry=r).set_function(engine.queue_depth)
            Gauge("roost_running_requests", "requests in the running batch", registry=r).set_function(engine.active)
            Gauge("roost_kv_cache_usage", "share of KV cache positions in use", registry=r).set_function(
                engine.kv_usage
            )
            upstreams = engine.upstreams()
            if upstreams:  # generation by upstream replicas: per-upstream series
                self._upstream_metrics(engine, upstreams)

    def _upstream_metrics(self, engine: GenerationEngine, upstreams: Sequence[Upstream]) -> None:
        r = self.registry
        reqs = Counter("roost_upstream_requests", "requests sent to each upstream", ["upstream", "outcome"], registry=r)
        ttft = Histogram(
            "roost_upstream_time_to_first_token_seconds",
            "time to first token through each upstream",
            ["upstream"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        out = Gauge("roost_upstream_outstanding", "requests in flight at each upstream", ["upstream"], registry=r)
        up = Gauge("roost_upstream_healthy", "1 when the upstream passes its health check", ["upstream"], registry=r)
        for u in upstreams:  # labelled by the URL without its credentials
            out.labels(u.label).set_function(functools.partial(_outstanding, u))
            up.labels(u.label).set_function(functools.partial(_healthy, u))

        def on_upstream(url: str, outcome: str, first: float | None) -> None:
            reqs.labels(url, outcome).inc()
            if first is not None:
                ttft.labels(url).observe(first)

        engine.on_upstream = on_upstream


def _outstanding(u: Upstream) -> float:
    return float(u.outstanding)


def _healthy(u: Upstream) -> float:
    return float(u.healthy)
