"""Turn served and failed requests into decision-log rows (and metrics, when enabled)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.conversation import NO_OPTIONS, Message
from engine.policy.model import Policy
from engine.routing.decide import Decision
from engine.routing.features import Features, Request
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
        return prompt_hash(request.messages), prompt_text(request.messages) if mode == "full" else None

    def _base(self, rid: str, started: float, request: Request, features: Features, route: str | None,
              plan: tuple[str, ...], downgraded: bool) -> dict[str, Any]:
        f = features
        phash, prompt = self._prompt_fields(request)
        meta = {str(k): v for k, v in request.meta.items()}
        tenant, key = meta.get("tenant"), meta.get("key")
        opts = request.options
        output = opts.output
        return {
            "id": rid, "ts": started, "policy_digest": self.policy.digest,
            "tenant": None if tenant is None else str(tenant), "api_key_id": None if key is None else str(key),
            "route": route, "query_type": f.query_type, "plan": plan, "prompt_tokens": f.prompt_tokens,
            "stream": request.stream, "max_tokens": request.max_tokens, "temperature": request.temperature,
            "prompt_hash": phash, "prompt": prompt, "meta": meta, "downgraded": downgraded,
            "features": {"signals": dict(f.signals), "has_tools": f.has_tools, "has_images": f.has_images,
                         "has_system": f.has_system},
            "needs": _needs(request), "tools_offered": len(opts.tools),
            "images": sum(len(m.images) for m in request.messages) if f.has_images else 0,
            "output_format": "text" if output is None else output.type, "seed": opts.seed,
        }

    def _attempts(self, rid: str, walk: Walk) -> list[AttemptRecord]:
        return [AttemptRecord(request_id=rid, n=a.n, model=a.model, provider=a.provider, ts=a.ts,
                              latency_ms=a.latency_ms, outcome=a.outcome, error_class=a.error_class,  # type: ignore[arg-type]
                              error_message=a.error_message, input_tokens=a.input_tokens,
                              output_tokens=a.output_tokens, cost_usd=a.cost_usd, retry_after=a.retry_after)
                for a in walk.attempts]

    def served(self, rid: str, started: float, request: Request, decision: Decision, walk: Walk,
               result: RoutedCompletion, *, cache_saved: float = 0.0,
               cache_info: Mapping[str, Any] | None = None) -> None:
        """Log a completed request (served by a vendor or from the cache); `cache_info` lands in `features.cache`."""
        base = self._base(rid, started, request, decision.features, decision.route, decision.plan,
                          decision.downgraded)
        if cache_info:
            base["features"] = {**base["features"], "cache": dict(cache_info)}
        rec = RequestRecord(
            **base, model=result.model, provider=result.provider,
            attempts=result.attempts, fallbacks=result.fallbacks, outcome="cached" if result.cached else "served",
            input_tokens=sum(a.input_tokens for a in walk.attempts) if not result.cached else 0,
            output_tokens=sum(a.output_tokens for a in walk.attempts) if not result.cached else 0,
            cost_usd=result.cost_usd, latency_ms=result.latency_ms, cache_hit=result.cached,
            saved_cost_usd=cache_saved if result.cached else 0.0, finish_reason=result.finish_reason,
            tool_calls=len(result.tool_calls))
        self._emit(rec, [] if result.cached else self._attempts(rid, walk))

    def cached(self, rid: str, started: float, request: Request, features: Features, route: str | None,
               result: RoutedCompletion, saved: float) -> None:
        """Log a request served from the cache before any decision: it has no plan and no attempts."""
        self.cached_as(self.request_fields(request, features, route), rid, started, result, saved)

    def request_fields(self, request: Request, features: Features, route: str | None) -> dict[str, Any]:
        """The row fields of a cache hit that depend on the request alone (all but its id and time):
        a repeat of the same request can reuse them (`cached_as`); they are only read."""
        fields = self._base("", 0.0, request, features, route, (), False)
        del fields["id"], fields["ts"]
        return fields

    def cached_as(self, fields: Mapping[str, Any], rid: str, started: float, result: RoutedCompletion,
                  saved: float) -> None:
        """`cached`, from the request's `request_fields`."""
        rec = RequestRecord(
            **fields, id=rid, ts=started, model=result.model, provider=result.provider, outcome="cached",
            latency_ms=result.latency_ms, cache_hit=True, saved_cost_usd=saved, finish_reason=result.finish_reason,
            tool_calls=len(result.tool_calls))
        self._emit(rec, [])

    def failed(self, rid: str, started: float, t0: float, request: Request, decision: Decision, walk: Walk,
               error: Exception) -> None:
        """Log a request that ended in an error (refused, over quota, every model failed)."""
        tried = [a.error_class or "" for a in walk.attempts
                 if a.outcome != "skipped" or a.error_class in RATE_LIMIT_CLASSES]
        outcome: Outcome = "bad_request" if walk.callers_fault else outcome_of_error(error, tried)
        rec = RequestRecord(
            **self._base(rid, started, request, decision.features, decision.route, decision.plan,
                         decision.downgraded), attempts=sum(
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


_STREAMING = ("streaming",)


def _needs(request: Request) -> tuple[str, ...]:
    if request.options is NO_OPTIONS and not (request.has_tools or request.has_images):
        # plain text (the common case): nothing to scan; history tool turns set has_tools
        return _STREAMING if request.stream else ()
    return tuple(sorted(request.needs))


def prompt_hash(messages: Sequence[Message]) -> str:
    """sha256 hex of a conversation with whitespace collapsed: what `prompt_hash` holds.

    Tool calls (name and arguments), the call a tool result answers and images (by content
    hash, so by their bytes) are prompt content too; a plain-text conversation hashes as it
    always has, so hashes stay comparable across versions.
    """
    h = hashlib.sha256()
    for m in messages:
        h.update(f"{m.role}\0{' '.join(m.text.split())}\0".encode("utf-8", "surrogatepass"))
        if m.tool_calls or m.tool_call_id is not None or not isinstance(m.content, str):
            for c in m.tool_calls:
                h.update(f"\x1fcall\0{c.id}\0{c.name}\0{c.arguments}\0".encode("utf-8", "surrogatepass"))
            if m.tool_call_id is not None:
                h.update(f"\x1fresult\0{m.tool_call_id}\0".encode("utf-8", "surrogatepass"))
            for img in m.images:
                h.update(f"\x1fimage\0{img.content_hash}\0".encode())
    return h.hexdigest()


def prompt_text(messages: Sequence[Message]) -> str:
    """A conversation as `log.prompts: full` stores it: `role: text` paragraphs, with tool calls,
    tool results and images written out in brackets (inline images as their data URL)."""
    out = []
    for m in messages:
        pieces = [m.text] if m.text else []
        if m.tool_call_id is not None:
            pieces.insert(0, f"[result of {m.tool_call_id}]")
        pieces.extend(f"[image {img.data_url}]" for img in m.images)
        pieces.extend(f"[call {c.id} {c.name} {c.arguments}]" for c in m.tool_calls)
        out.append(f"{m.role}: {' '.join(pieces)}")
    return "\n\n".join(out)
