"""Prometheus metrics of the service, used when `engine.metrics` is not available.

The same hooks as `engine.metrics.RouterMetrics`: `observe(record, attempts)` per request,
`refresh(router)` before a scrape, `render()` for `/metrics`. Each instance has its own
registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine.store.records import AttemptRecord, RequestRecord

__all__ = ["FallbackMetrics"]

_CIRCUIT = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class FallbackMetrics:
    """Request, attempt, token, cost and circuit metrics in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("router_requests_total", "Requests by outcome.",
                                ["tenant", "route", "model", "outcome"], registry=r)
        self.attempts = Counter("router_attempts_total", "Vendor attempts by outcome.",
                                ["model", "outcome", "error_class"], registry=r)
        self.latency = Histogram("router_request_latency_seconds", "Whole-request latency.", ["model"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.tokens = Counter("router_tokens_total", "Tokens billed.", ["tenant", "model", "direction"], registry=r)
        self.cost = Counter("router_cost_usd_total", "Spend in USD.", ["tenant", "model"], registry=r)
        self.cache_hits = Counter("router_cache_hits_total", "Requests served from the cache.", ["tenant"], registry=r)
        self.circuit = Gauge("router_circuit_state", "Circuit per model: 0 closed, 1 half open, 2 open.",
                             ["provider", "model"], registry=r)
        self.policy = Gauge("router_policy_info", "The live policy (value 1).", ["digest"], registry=r)

    def observe(self, rec: RequestRecord, attempts: Sequence[AttemptRecord]) -> None:
        """Count one finished request."""
        tenant, model = rec.tenant or "", rec.model or ""
        self.requests.labels(tenant, rec.route or "", model, rec.outcome).inc()
        for a in attempts:
            self.attempts.labels(a.model, a.outcome, a.error_class or "").inc()
        if rec.latency_ms is not None:
            self.latency.labels(model).observe(rec.latency_ms / 1000)
        if rec.input_tokens:
            self.tokens.labels(tenant, model, "input").inc(rec.input_tokens)
        if rec.output_tokens:
            self.tokens.labels(tenant, model, "output").inc(rec.output_tokens)
        if rec.cost_usd:
            self.cost.labels(tenant, model).inc(rec.cost_usd)
        if rec.cache_hit:
            self.cache_hits.labels(tenant).inc()

    def refresh(self, router: Any) -> None:
        """Set the gauges from the live router (circuit states, policy digest)."""
        for m in router.policy.models.values():
            self.circuit.labels(m.provider, m.name).set(_CIRCUIT.get(router.health.state(m.name), 0.0))
        self.policy.clear()
        self.policy.labels(router.policy.digest[:12]).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
