"""Prometheus metrics of a `Router`, for any app that embeds it.

    metrics = RouterMetrics(tenant_label=policy.metrics_tenant_label)
    router = Router(policy, metrics=metrics)
    metrics.bind(router)                      # gauges are refreshed from it at every scrape
    ...
    body, content_type = metrics.render(), metrics.content_type   # serve these on GET /metrics

The router's recorder calls `observe()` once per request (with its attempts) and
`health_event()` on every circuit or demotion change. An observed request is queued and counted
into the counters and histograms at the next scrape (or every 64 requests): a batch
makes one increment per label set instead of about ten Prometheus calls, each with its lock, on
every request's path. A scrape always sees every request observed before it.

Gauges that describe the router *now* (circuit state, demotions, quota room, cache hit ratio,
policy digest) are pulled from the router by `refresh(router)`, which a bound router gets at
every scrape.

Label cardinality is bounded by the policy: routes, models, providers, query types, outcomes
and error classes are finite sets. Tenants are not, so a `tenant` label (on requests and cost)
exists only when the policy sets `metrics: {tenant_label: true}` and the caller passes
`tenant_label=True`; quota gauges then show each tenant's scope, and otherwise only the most
used scope of each quota.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from engine.runtime.health import HealthEvent
from engine.store.records import AttemptRecord, RequestRecord

if TYPE_CHECKING:
    from engine.runtime.router import Router

__all__ = ["LATENCY_BUCKETS", "RouterMetrics"]

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0,
                                      60.0)
"""Histogram buckets in seconds: from a cache hit to a long generation."""

_CIRCUIT = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_NONE = "none"
_MOST_USED = "most_used"
_UNBOUNDED_SCOPES = frozenset({"tenant", "key"})
_BATCH = 64  # requests queued before they are counted without a scrape (~0.3 ms of work at a time)

Scope = MutableMapping[str, Any]
_Sums = defaultdict[tuple[Any, tuple[str, ...]], float]  # (metric, label values) -> amount to add
_Seen = list[tuple[Any, tuple[str, ...], float]]  # (histogram, label values, value) to observe
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RouterMetrics:
    """Counters, histograms and gauges of one router, in one Prometheus registry.

    Args:
        registry: where to register (default: a new private `CollectorRegistry`, so several
            routers or tests never clash; pass `prometheus_client.REGISTRY` to join an app's
            default registry).
        tenant_label: add a `tenant` label to requests and cost (only if the policy allows it:
            `policy.metrics_tenant_label`).
        namespace: prefix of every metric name.
    """

    content_type: str = CONTENT_TYPE_LATEST
    """Content-Type of `render()`'s output."""

    def __init__(self, registry: CollectorRegistry | None = None, *, tenant_label: bool = False,
                 namespace: str = "llm_router") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tenant_label = tenant_label
        self._router: Router | None = None
        self._lock = threading.Lock()  # one refresh at a time (scrapes may come from several threads)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}  # (metric, label values) -> child
        self._queued: deque[tuple[RequestRecord, Sequence[AttemptRecord]]] = deque()
        self._count_lock = threading.Lock()
        # counters and histograms are collected through _Via: a scrape counts the queue first
        ns, reg = namespace, None
        t = ("tenant",) if tenant_label else ()
        self.requests = Counter("requests", "Requests by route, serving model and outcome (served, cached, failed, "
                                "refused_policy, refused_quota, rate_limited, no_model, bad_request).",
                                ("route", "model", "provider", "outcome", *t), namespace=ns, registry=reg)
        self.query_types = Counter("query_type_requests", "Requests by query type and serving model.",
                                   ("query_type", "model"), namespace=ns, registry=reg)
        self.attempts = Counter("attempts", "Model calls (retries included) and deliberate skips, by outcome.",
                                ("model", "provider", "outcome"), namespace=ns, registry=reg)
        self.errors = Counter("errors", "Failed model calls by error class.", ("model", "provider", "error_class"),
                              namespace=ns, registry=reg)
        self.fallbacks = Counter("fallbacks", "Models tried beyond the first, by route and serving model.",
                                 ("route", "model"), namespace=ns, registry=reg)
        self.tokens = Counter("tokens", "Tokens billed, by model and direction (input, output).",
                              ("model", "provider", "direction"), namespace=ns, registry=reg)
        self.cost = Counter("cost_usd", "Spend in USD over every attempt.", ("route", "model", "provider", *t),
                            namespace=ns, registry=reg)
        self.cache_hits = Counter("cache_hits", "Requests served from the response cache.", ("route",),
                                  namespace=ns, registry=reg)
        self.cache_saved = Counter("cache_saved_usd", "Spend avoided by cache hits, in USD.", ("route",),
                                   namespace=ns, registry=reg)
        self.health_events = Counter("health_events", "Circuit and demotion changes.", ("model", "kind"),
                                     namespace=ns, registry=reg)
        self.request_latency = Histogram("request_duration_seconds", "Whole-request latency (all attempts).",
                                         ("route", "model"), namespace=ns, registry=reg, buckets=LATENCY_BUCKETS)
        self.attempt_latency = Histogram("attempt_duration_seconds", "Latency of one model call.",
                                         ("model", "provider", "outcome"), namespace=ns, registry=reg,
                                         buckets=LATENCY_BUCKETS)
        # pulled gauges: collected through _Via so that a bound router is read at scrape time
        self.circuit = Gauge("circuit_state", "Circuit state per model: 0 closed, 1 half-open, 2 open.",
                             ("model", "provider"), namespace=ns, registry=None)
        self.demoted = Gauge("model_demoted", "1 while health has demoted the model to the end of plans.",
                             ("model",), namespace=ns, registry=None)
        self.quota_remaining = Gauge("quota_remaining", "Room left in the current window of a quota "
                                     f"(scope '{_MOST_USED}': the least room over tenants/keys).",
                                     ("quota", "measure", "scope"), namespace=ns, registry=None)
        self.quota_used = Gauge("quota_used_ratio", "Share of a quota's limit used in the current window "
                                "(the most used measure).", ("quota", "scope"), namespace=ns, registry=None)
        self.cache_ratio = Gauge("cache_hit_ratio", "Cache hits / lookups since the router started.",
                                 namespace=ns, registry=None)
        self.cache_entries = Gauge("cache_entries", "Entries in the response cache.", namespace=ns, registry=None)
        self.policy_info = Gauge("policy_info", "1 for the digest of the policy in force.", ("digest",),
                                 namespace=ns, registry=None)
        self.state_up = Gauge("state_backend_up", "1 while the shared state store answers (always 1 embedded).",
                              ("backend",), namespace=ns, registry=None)
        self.state_errors = Gauge("state_backend_errors", "Operations on the shared state store that failed or "
                                  "timed out since start.", ("backend",), namespace=ns, registry=None)
        self.state_reconnects = Gauge("state_backend_reconnects", "Times the shared state store came back after "
                                      "being down.", ("backend",), namespace=ns, registry=None)
        pulled = (self.circuit, self.demoted, self.quota_remaining, self.quota_used, self.cache_ratio,
                  self.cache_entries, self.policy_info, self.state_up, self.state_errors, self.state_reconnects)
        counted = (self.requests, self.query_types, self.attempts, self.errors, self.fallbacks, self.tokens,
                   self.cost, self.cache_hits, self.cache_saved, self.health_events, self.request_latency,
                   self.attempt_latency)
        self.registry.register(_Via(self.count_queued, counted))
        self.registry.register(_Via(self._refresh_bound, pulled))

    # -- recorder hooks ----------------------------------------------------------------------

    def observe(self, record: RequestRecord, attempts: Sequence[AttemptRecord]) -> None:
        """Count one finished request and its attempts (called by the router's recorder)."""
        queued = self._queued
        queued.append((record, attempts))
        if len(queued) >= _BATCH:
            self.count_queued()

    def count_queued(self) -> None:
        """Count the requests observed so far into the counters and histograms (every scrape does
        this first; call it before reading a metric's value directly)."""
        queued = self._queued
        if not queued:
            return
        with self._count_lock:
            sums: _Sums = defaultdict(float)
            seen: _Seen = []
            while queued:
                try:
                    record, attempts = queued.popleft()
                except IndexError:  # another thread took the last one
                    break
                self._tally(record, attempts, sums, seen)
            child = self._child
            for (metric, labels), amount in sums.items():
                child(metric, *labels).inc(amount)
            for metric, labels, value in seen:
                child(metric, *labels).observe(value)

    def _tally(self, record: RequestRecord, attempts: Sequence[AttemptRecord],
               sums: _Sums, seen: _Seen) -> None:
        """Add one request's increments to `sums` (per metric and labels) and its latencies to `seen`."""
        route, model, provider = record.route or _NONE, record.model or _NONE, record.provider or _NONE
        t = (record.tenant or _NONE,) if self.tenant_label else ()
        sums[self.requests, (route, model, provider, record.outcome, *t)] += 1
        if record.query_type is not None:
            sums[self.query_types, (record.query_type, model)] += 1
        if record.fallbacks:
            sums[self.fallbacks, (route, model)] += record.fallbacks
        if record.latency_ms is not None and record.outcome != "bad_request":
            seen.append((self.request_latency, (route, model), record.latency_ms / 1000))
        if record.cache_hit:
            sums[self.cache_hits, (route,)] += 1
            if record.saved_cost_usd:
                sums[self.cache_saved, (route,)] += record.saved_cost_usd
        for a in attempts:
            p = a.provider or _NONE
            sums[self.attempts, (a.model, p, a.outcome)] += 1
            if a.outcome == "error":
                sums[self.errors, (a.model, p, a.error_class or "Error")] += 1
            if a.latency_ms is not None and a.outcome != "skipped":
                seen.append((self.attempt_latency, (a.model, p, a.outcome), a.latency_ms / 1000))
            if a.input_tokens:
                sums[self.tokens, (a.model, p, "input")] += a.input_tokens
            if a.output_tokens:
                sums[self.tokens, (a.model, p, "output")] += a.output_tokens
            if a.cost_usd:
                sums[self.cost, (route, a.model, p, *t)] += a.cost_usd

    def _child(self, metric: Any, *labels: str) -> Any:
        # `labels()` takes a lock and validates every call; the children never change once made,
        # so remembering them keeps `observe` cheap on the request path
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def health_event(self, event: HealthEvent) -> None:
        """Count a health change and update the model's circuit/demotion gauges at once."""
        self.health_events.labels(event.model, event.kind).inc()
        if event.kind.startswith("circuit_"):
            provider = _NONE
            if self._router is not None and event.model in self._router.policy.models:
                provider = self._router.policy.models[event.model].provider
            self.circuit.labels(event.model, provider).set(_CIRCUIT[event.kind.removeprefix("circuit_")])
        elif event.kind in ("demoted", "restored"):
            self.demoted.labels(event.model).set(1.0 if event.kind == "demoted" else 0.0)

    # -- pulled state ------------------------------------------------------------------------

    def bind(self, router: Router) -> RouterMetrics:
        """Refresh the gauges from `router` at every scrape (`render`, the HTTP helpers); returns self."""
        self._router = router
        return self

    def refresh(self, router: Router) -> None:
        """Set the gauges from `router`: circuits, demotions, quota room, cache ratio, policy digest."""
        with self._lock:
            policy = router.policy
            demoted = router.health.demoted()
            for name, m in policy.models.items():
                self.circuit.labels(name, m.provider).set(_CIRCUIT.get(router.health.state(name), 0.0))
                self.demoted.labels(name).set(1.0 if name in demoted else 0.0)
            cache = router.cache
            if cache is not None:
                self.cache_ratio.set(cache.hit_rate)
                self.cache_entries.set(len(cache))
            self.policy_info.clear()
            self.policy_info.labels(policy.digest[:12] or _NONE).set(1.0)
            if router.quotas is not None:
                self._quotas(policy.quotas, router.quotas.usage())
            backend = getattr(router, "backend", None)
            if backend is not None:
                st = backend.status()
                self.state_up.labels(st["backend"]).set(1.0 if st["connected"] else 0.0)
                self.state_errors.labels(st["backend"]).set(float(st.get("errors", 0)))
                self.state_reconnects.labels(st["backend"]).set(float(st.get("reconnects", 0)))

    def _quotas(self, quotas: Iterable[Any], usage: Sequence[dict[str, Any]]) -> None:
        self.quota_remaining.clear()
        self.quota_used.clear()
        for q in quotas:
            rows = [r for r in usage if r["quota"] == q.name]
            # tenant/key scopes are unbounded: without the tenant label only the worst one is shown
            per_scope = self.tenant_label or not (_UNBOUNDED_SCOPES & set(q.scope))
            limits = {m: getattr(q.limit, m) for m in ("requests", "tokens", "cost_usd")
                      if getattr(q.limit, m) is not None}
            groups: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                groups.setdefault((str(r["scope_key"]) or "global") if per_scope else _MOST_USED, []).append(r)
            if not groups:  # nothing counted yet in this window: all the room is left
                groups["global" if not q.scope else _MOST_USED] = []
            for scope, members in groups.items():
                worst_ratio = 0.0
                for measure, limit in limits.items():
                    used = max((float(r[measure]) for r in members), default=0.0)
                    self.quota_remaining.labels(q.name, measure, scope).set(max(0.0, limit - used))
                    if limit:
                        worst_ratio = max(worst_ratio, used / limit)
                self.quota_used.labels(q.name, scope).set(worst_ratio)

    def _refresh_bound(self) -> None:
        if self._router is not None:
            self.refresh(self._router)

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format (serve it on GET /metrics with `content_type`)."""
        return generate_latest(self.registry)

    def asgi_app(self) -> Callable[[Scope, Callable[[], Awaitable[Any]], Send], Awaitable[None]]:
        """A minimal ASGI app answering every HTTP request with `render()` (mount it at /metrics)."""

        async def app(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
            if scope["type"] == "lifespan":  # nothing to start or stop; answer so servers carry on
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            if scope["type"] != "http":
                return
            body = self.render()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", self.content_type.encode())]})
            await send({"type": "http.response.body", "body": body})

        return app

    def wsgi_app(self) -> Any:
        """A WSGI app serving the registry (for Flask, Django or any WSGI server)."""
        from prometheus_client import make_wsgi_app

        return make_wsgi_app(self.registry)

    def start_http_server(self, port: int, addr: str = "127.0.0.1") -> tuple[Any, threading.Thread]:
        """Serve /metrics from a background thread, with no web framework (returns server and thread)."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return server, thread


class _Via(Collector):
    """Collects `metrics` after `before()`: the queued requests counted into the counters, or the
    gauges refreshed from the bound router. Their names are described, so a scrape restricted
    to some names (`?name[]=`) still goes through `before`."""

    def __init__(self, before: Callable[[], None], metrics: Sequence[Any]) -> None:
        self._before = before
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        self._before()
        for m in self._metrics:
            yield from m.collect()

    def describe(self) -> Iterable[Metric]:
        for m in self._metrics:
            yield from m.describe()
