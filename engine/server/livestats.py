"""What the running service has served, kept in memory for `/dashboard` and error mapping.

`LiveStats` is the `metrics` hook of every router the service builds: the recorder calls
`observe(record, attempts)` once per request, on the event loop, after the decision-log row is
queued. It forwards to the Prometheus metrics, keeps bounded aggregates for the dashboard's
charts, and remembers the Retry-After a vendor gave for a request that failed only on rate
limits (the engine's `AllModelsFailed` lists error classes, not the vendors' hints).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.server.logs import log_event, note_request_id
from engine.store.outcomes import OUTCOMES, RATE_LIMIT_CLASSES, vocabulary
from engine.store.records import AttemptRecord, RequestRecord

log = logging.getLogger("engine.server")

__all__ = ["RATE_LIMIT_CLASSES", "LiveStats"]


_LATENCIES = 2000  # latency samples kept per model
_MINUTES = 60  # per-minute buckets kept
_RETRY_HINTS = 1024  # pending Retry-After hints (taken by the error handler right after the row)


@dataclass(slots=True)
class _ModelStats:
    requests: int = 0  # requests it served
    calls: int = 0  # attempts on it (retries included, skips not)
    errors: int = 0  # failed attempts
    cost_usd: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES))


@dataclass(slots=True)
class _TenantStats:
    requests: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    cache_hits: int = 0


class LiveStats:
    """Aggregates of the requests served since start, and the router metrics hook.

    Args:
        metrics: the Prometheus `RouterMetrics` (or any object with `observe`), forwarded to; or None.
        clock: wall time, for the per-minute series.
    """

    def __init__(self, metrics: Any = None, *, clock: Any = time) -> None:
        self.metrics = metrics
        self.observers: list[Any] = []
        """More hooks given every request and health change (the tracer of `engine serve --otel`)."""
        self._time = clock.time
        self.started = self._time()
        self.outcomes: Counter[str] = Counter()
        self.attempt_errors: Counter[str] = Counter()
        self.models: dict[str, _ModelStats] = {}
        self.tenants: dict[str, _TenantStats] = {}
        self.routes: Counter[str] = Counter()
        self.minutes: OrderedDict[int, Counter[str]] = OrderedDict()
        self._retry_after: OrderedDict[str, float | None] = OrderedDict()

    # -- the router hook --------------------------------------------------------------------

    def observe(self, rec: RequestRecord, attempts: Sequence[AttemptRecord]) -> None:
        """Count one finished request (called by the router's recorder)."""
        note_request_id(rec.id)  # the x-request-id of the HTTP request being served, if any
        if self.metrics is not None:
            self.metrics.observe(rec, attempts)
        for hook in self.observers:
            hook.observe(rec, attempts)
        self.outcomes[rec.outcome] += 1
        minute = int(rec.ts // 60)
        bucket = self.minutes.get(minute)
        if bucket is None:
            bucket = self.minutes[minute] = Counter()
            while len(self.minutes) > _MINUTES:
                self.minutes.popitem(last=False)
        bucket[rec.outcome] += 1
        if rec.route:
            self.routes[rec.route] += 1
        tenant = self.tenants.get(rec.tenant or "-")
        if tenant is None:
            tenant = self.tenants[rec.tenant or "-"] = _TenantStats()
        tenant.requests += 1
        tenant.cost_usd += rec.cost_usd
        tenant.tokens += rec.input_tokens + rec.output_tokens
        tenant.cache_hits += rec.cache_hit
        for a in attempts:
            if a.outcome == "error" or a.error_class in RATE_LIMIT_CLASSES:
                self.attempt_errors[a.error_class or "Error"] += 1
        if rec.model:
            m = self._model(rec.model)
            m.requests += 1
            m.cost_usd += rec.cost_usd
            if rec.latency_ms is not None and not rec.cache_hit:
                m.latencies.append(rec.latency_ms)
        for a in attempts:
            if a.outcome != "skipped":
                m = self._model(a.model)  # a model that only ever failed is shown too
                m.calls += 1
                m.errors += a.outcome == "error"
        if rec.outcome in ("failed", "rate_limited") and attempts:
            self._remember_retry_after(rec.id, attempts)

    def _model(self, name: str) -> _ModelStats:
        m = self.models.get(name)
        if m is None:
            m = self.models[name] = _ModelStats()
        return m

    def _remember_retry_after(self, rid: str, attempts: Sequence[AttemptRecord]) -> None:
        tried = [a for a in attempts if a.outcome != "skipped" or a.error_class in RATE_LIMIT_CLASSES]
        if tried and all(a.error_class in RATE_LIMIT_CLASSES for a in tried):
            hints = [a.retry_after for a in tried if a.retry_after is not None]
            self._retry_after[rid] = min(hints) if hints else None
            while len(self._retry_after) > _RETRY_HINTS:
                self._retry_after.popitem(last=False)

    def take_retry_after(self, request_id: str | None) -> tuple[bool, float | None]:
        """(whether request `request_id` failed only on rate limits, the vendors' shortest Retry-After)."""
        if request_id is None or request_id not in self._retry_after:
            return False, None
        return True, self._retry_after.pop(request_id)

    def health_event(self, event: Any) -> None:
        """Log a circuit or demotion change (a `HealthEvent`) and pass it on to the metrics."""
        level = logging.WARNING if event.kind in ("circuit_open", "demoted") else logging.INFO
        log_event(log, level, event.kind, f"{event.model}: {event.kind.replace('_', ' ')}: {event.detail}",
                  model=event.model, detail=event.detail)
        for target in (self.metrics, *self.observers):
            hook = getattr(target, "health_event", None)
            if hook is not None:
                hook(event)

    def __getattr__(self, name: str) -> Any:
        # other hooks of the metrics object (health events...) pass straight through
        metrics = self.__dict__.get("metrics")
        if metrics is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(metrics, name)

    # -- the dashboard's data ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain aggregates (JSON), for `/dashboard/data`."""
        def pct(values: deque[float], q: float) -> float | None:
            if not values:
                return None
            s = sorted(values)
            return round(s[min(len(s) - 1, int(q * len(s)))], 3)

        return {
            "since": self.started, "now": self._time(), "vocabulary": vocabulary(),
            "outcomes": {o: self.outcomes.get(o, 0) for o in OUTCOMES},
            "attempt_errors": dict(self.attempt_errors), "routes": dict(self.routes),
            "models": {name: {"requests": m.requests, "calls": m.calls, "errors": m.errors,
                              "cost_usd": round(m.cost_usd, 8),
                              "p50_ms": pct(m.latencies, 0.5), "p95_ms": pct(m.latencies, 0.95)}
                       for name, m in self.models.items()},
            "tenants": {name: {"requests": t.requests, "cost_usd": round(t.cost_usd, 8), "tokens": t.tokens,
                               "cache_hits": t.cache_hits} for name, t in self.tenants.items()},
            "minutes": [{"t": minute * 60, **counts} for minute, counts in self.minutes.items()],
        }
