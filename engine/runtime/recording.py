"""Turn served and failed requests into decision-log rows (and metrics, when enabled)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.policy.model import Policy
from engine.routing.decide import Decision
from engine.routing.features import Request
from engine.runtime.clock import Clock
from engine.runtime.dispatch import Walk
from engine.runtime.health import HealthEvent
from engine.runtime.result import RoutedCompletion
from engine.store.outcomes import RATE_LIMIT_CLASSES, outcome_of_error
from engine.store.records import AttemptRecord, EventRecord, FeedbackRecord, Outcome, RequestRecord


class Recorder:
    """Writes one `requests` row per request (and its attempts) to the decision log.

    With no log file configured, rows still go to `metrics` (if any) and are otherwise
    dropped on purpose: the app chose not to keep a log.
    """

    def __init__(self, path: str | Path | None, policy: Policy, *, metrics: Any = None, clock: Clock) -> None:
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.log = None
        if path:
            from engine.store.decisions import DecisionLog

            self.log = DecisionLog(path)

    # -- rows ------------------------------------------------------------------------------

    def _prompt_fields(self, request: Request) -> tuple[str | None, str | None]:
        mode = self.policy.log.prompts
        if mode == "none":
            return None, None
        h = hashlib.sha256()
        for role, content in request.messages:
            h.update(f"{role}\0{' '.join(content.split())}\0".encode("utf-8", "surrogatepass"))
        text = "\n\n".join(f"{r}: {c}" for r, c in request.messages) if mode == "full" else None
        return h.hexdigest(), text

    def _base(self, rid: str, started: float, request: Request, decision: Decision, walk: Walk) -> dict[str, Any]:
        f = decision.features
        phash, prompt = self._prompt_fields(request)
        meta = {str(k): v for k, v in request.meta.items()}
        return {
            "id": rid, "ts": started, "policy_digest": self.policy.digest, "tenant": walk.tenant,
            "api_key_id": walk.key, "route": decision.route, "query_type": decision.query_type,
            "plan": decision.plan, "prompt_tokens": f.prompt_tokens, "stream": request.stream,
            "max_tokens": request.max_tokens, "temperature": request.temperature, "prompt_hash": phash,
            "prompt": prompt, "meta": meta, "downgraded": decision.downgraded,
            "features": {"signals": dict(f.signals), "has_tools": f.has_tools, "has_images": f.has_images,
                         "has_system": f.has_system},
        }

    def _attempts(self, rid: str, walk: Walk) -> list[AttemptRecord]:
        return [AttemptRecord(request_id=rid, n=a.n, model=a.model, provider=a.provider, ts=a.ts,
                              latency_ms=a.latency_ms, outcome=a.outcome, error_class=a.error_class,  # type: ignore[arg-type]
                              error_message=a.error_message, input_tokens=a.input_tokens,
                              output_tokens=a.output_tokens, cost_usd=a.cost_usd, retry_after=a.retry_after)
                for a in walk.attempts]

    def served(self, rid: str, started: float, request: Request, decision: Decision, walk: Walk,
               result: RoutedCompletion, *, cache_saved: float = 0.0) -> None:
        """Log a completed request (served by a vendor or from the cache)."""
        rec = RequestRecord(
            **self._base(rid, started, request, decision, walk), model=result.model, provider=result.provider,
            attempts=result.attempts, fallbacks=result.fallbacks, outcome="cached" if result.cached else "served",
            input_tokens=sum(a.input_tokens for a in walk.attempts) if not result.cached else 0,
            output_tokens=sum(a.output_tokens for a in walk.attempts) if not result.cached else 0,
            cost_usd=result.cost_usd, latency_ms=result.latency_ms, cache_hit=result.cached,
            saved_cost_usd=cache_saved if result.cached else 0.0)
        self._emit(rec, [] if result.cached else self._attempts(rid, walk))

    def failed(self, rid: str, started: float, t0: float, request: Request, decision: Decision, walk: Walk,
               error: Exception) -> None:
        """Log a request that ended in an error (refused, over quota, every model failed)."""
        tried = [a.error_class or "" for a in walk.attempts
                 if a.outcome != "skipped" or a.error_class in RATE_LIMIT_CLASSES]
        outcome: Outcome = outcome_of_error(error, tried)
        rec = RequestRecord(
            **self._base(rid, started, request, decision, walk), attempts=sum(
                1 for a in walk.attempts if a.outcome != "skipped"), fallbacks=walk.fallbacks, outcome=outcome,
            error_class=type(error).__name__, error_message=str(error)[:2000], cost_usd=walk.cost(),
            input_tokens=sum(a.input_tokens for a in walk.attempts),
            output_tokens=sum(a.output_tokens for a in walk.attempts),
            latency_ms=(time.perf_counter() - t0) * 1000)
        self._emit(rec, self._attempts(rid, walk))

    def bad_request(self, rid: str, started: float, meta: Mapping[str, Any] | None, error: Exception) -> None:
        """Log a request rejected before routing (nothing was sent)."""
        meta = {str(k): v for k, v in (meta or {}).items()}
        tenant, key = meta.get("tenant"), meta.get("key")
        rec = RequestRecord(id=rid, ts=started, policy_digest=self.policy.digest,
                            tenant=None if tenant is None else str(tenant),
                            api_key_id=None if key is None else str(key), outcome="bad_request",
                            error_class=type(error).__name__, error_message=str(error)[:2000], meta=meta)
        self._emit(rec, [])

    def _emit(self, rec: RequestRecord, attempts: list[AttemptRecord]) -> None:
        if self.log is not None:
            self.log.record(rec, attempts)
        if self.metrics is not None:
            self.metrics.observe(rec, attempts)

    def health_event(self, event: HealthEvent) -> None:
        """Log a circuit or demotion change."""
        if self.log is not None:
            self.log.record_event(EventRecord(ts=event.ts, kind=event.kind, model=event.model, detail=event.detail))
        if self.metrics is not None and hasattr(self.metrics, "health_event"):
            self.metrics.health_event(event)

    def event(self, kind: str, detail: str, model: str | None = None) -> None:
        """Log another state change (policy reloads...)."""
        if self.log is not None:
            self.log.record_event(EventRecord(ts=self.clock.time(), kind=kind, model=model, detail=detail))

    def feedback(self, request_id: str, score: float | None, label: str | None) -> None:
        """Store an app's judgement of a response."""
        if self.log is None:
            raise RuntimeError("feedback needs a decision log: set log.sqlite in the policy or pass log_path")
        self.log.record_feedback(FeedbackRecord(request_id=request_id, ts=self.clock.time(), score=score, label=label))

    async def aclose(self) -> None:
        """Flush and close the log."""
        if self.log is not None:
            await self.log.aclose()
