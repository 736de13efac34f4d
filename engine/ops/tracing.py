"""OpenTelemetry traces of a `Router`: one span per request and one per model attempt.

    pip install 'llm-policy-router[otel]'

    from engine.ops.tracing import TraceObserver
    router = Router(policy, metrics=TraceObserver(policy=policy))      # spans go to the global provider
    router = Router(policy, metrics=Observers(RouterMetrics(), TraceObserver(policy=policy)))  # with metrics

Like `RouterMetrics`, it is a `metrics=` hook: the router's recorder calls `observe(record,
attempts)` once a request has ended, and the spans are built then from the decision-log record,
with the start and end times the record measured, so the router needs no tracing code of its
own. The request span is a child of whatever span is current when the request ends (an HTTP
server span of the app, say); each attempt span is its child, one per model call, retries
included (skipped models are events on the request span).

Attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.operation.name`,
`gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.usage.input_tokens` / `output_tokens`, `gen_ai.response.finish_reasons`,
`gen_ai.request.max_tokens`, `gen_ai.request.temperature`, `error.type`), plus the router's own under `llm_router.*`
(route, query type, plan, outcome, fallbacks, cache hit, cost, policy digest, request id,
tenant). The prompt is attached (`gen_ai.input.messages`) only when the policy logs prompts in
full (`log.prompts: full`); with `hash` only its hash is.

`engine serve --otel` exports them over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), as the OpenTelemetry SDK reads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.policy.model import Policy
    from engine.store.records import AttemptRecord, RequestRecord

__all__ = ["Observers", "TraceObserver", "otlp_tracer_provider"]

# gen_ai.provider.name of each adapter kind (the semantic conventions' well-known values)
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
              "openai_compatible": "openai", "simulated": "simulated"}
_FAILED = frozenset(("failed", "rate_limited", "no_model"))
_NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


class TraceObserver:
    """Builds spans from the router's records.

    Args:
        policy: the router's policy, to name each provider's vendor (`gen_ai.provider.name`) and
            each model's vendor id (`gen_ai.request.model`); without it the policy's names are used.
        tracer_provider: where spans go (default: the global one, `opentelemetry.trace`).

    Raises:
        ImportError: `opentelemetry-api` is not installed (the message says which extra to install).
    """

    def __init__(self, *, policy: Policy | None = None, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError:  # pragma: no cover - the extra is installed wherever this is used
            raise ImportError("tracing needs OpenTelemetry: pip install 'llm-policy-router[otel]'") from None
        self._trace = trace
        self._tracer = trace.get_tracer("engine.router", tracer_provider=tracer_provider)
        self.tracer_provider = tracer_provider
        self.policy = policy

    def _vendor(self, provider: str | None) -> str | None:
        if provider is None:
            return None
        p = self.policy.providers.get(provider) if self.policy is not None else None
        return _PROVIDERS.get(p.adapter, p.adapter) if p is not None else provider

    def _model_id(self, model: str | None) -> str | None:
        if model is None:
            return None
        m = self.policy.models.get(model) if self.policy is not None else None
        return m.id if m is not None else model

    def observe(self, record: RequestRecord, attempts: Sequence[AttemptRecord]) -> None:
        """Emit the spans of one finished request."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        start = _ns(record.ts)
        end = start + _ns((record.latency_ms or 0.0) / 1000)
        asked = record.plan[0] if record.plan else None
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "llm_router.request_id": record.id,
            "llm_router.outcome": record.outcome,
            "llm_router.attempts": record.attempts,
            "llm_router.fallbacks": record.fallbacks,
            "llm_router.cache_hit": record.cache_hit,
            "llm_router.cost_usd": record.cost_usd,
            "gen_ai.usage.input_tokens": record.input_tokens,
            "gen_ai.usage.output_tokens": record.output_tokens,
        }
        optional = {
            "gen_ai.request.model": self._model_id(asked), "gen_ai.response.model": self._model_id(record.model),
            "gen_ai.provider.name": self._vendor(record.provider), "gen_ai.request.max_tokens": record.max_tokens,
            "gen_ai.request.temperature": record.temperature, "llm_router.route": record.route,
            "llm_router.query_type": record.query_type, "llm_router.plan": list(record.plan) or None,
            "llm_router.model": record.model, "llm_router.policy_digest": record.policy_digest,
            "llm_router.tenant": record.tenant, "llm_router.key": record.api_key_id,
            "llm_router.prompt_hash": record.prompt_hash, "llm_router.downgraded": record.downgraded or None,
            "llm_router.saved_cost_usd": record.saved_cost_usd or None, "error.type": record.error_class,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        if record.finish_reason is not None:  # a list by the conventions: one entry per choice, and there is one
            attrs["gen_ai.response.finish_reasons"] = [record.finish_reason]
        if record.prompt is not None:  # only with `log.prompts: full`
            attrs["gen_ai.input.messages"] = json.dumps([{"role": "user", "parts": [
                {"type": "text", "content": record.prompt}]}])
        name = f"chat {record.route or record.model or 'router'}"
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, start_time=start, attributes=attrs)
        if record.outcome in _FAILED or record.outcome.startswith("refused") or record.outcome == "bad_request":
            span.set_status(Status(StatusCode.ERROR, (record.error_message or record.outcome)[:200]))
        parent = self._trace.set_span_in_context(span)
        # the answer, and so its finish reason, came from the last call that succeeded
        served = next((a.n for a in reversed(attempts) if a.outcome == "ok"), None)
        for a in attempts:
            if a.outcome == "skipped":
                span.add_event("model skipped", timestamp=_ns(a.ts), attributes={
                    "llm_router.model": a.model, "llm_router.reason": a.error_message or a.error_class or ""})
                continue
            self._attempt(a, parent, record, served=a.n == served)
        span.end(end_time=max(end, start))

    def _attempt(self, a: AttemptRecord, parent: Any, record: RequestRecord, *, served: bool = False) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        start = _ns(a.ts)
        model_id = self._model_id(a.model)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": model_id, "gen_ai.response.model": model_id,
            "gen_ai.usage.input_tokens": a.input_tokens, "gen_ai.usage.output_tokens": a.output_tokens,
            "llm_router.model": a.model, "llm_router.attempt": a.n, "llm_router.cost_usd": a.cost_usd,
            "llm_router.request_id": record.id,
        }
        vendor = self._vendor(a.provider)
        if vendor is not None:
            attrs["gen_ai.provider.name"] = vendor
        if record.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = record.max_tokens
        if served and record.finish_reason is not None:
            attrs["gen_ai.response.finish_reasons"] = [record.finish_reason]
        if a.error_class:
            attrs["error.type"] = a.error_class
        if a.retry_after is not None:
            attrs["llm_router.retry_after_s"] = a.retry_after
        span = self._tracer.start_span(f"chat {model_id}", context=parent, kind=SpanKind.CLIENT, start_time=start,
                                       attributes=attrs)
        if a.outcome == "error":
            span.set_status(Status(StatusCode.ERROR, (a.error_message or a.error_class or "error")[:200]))
        span.end(end_time=start + _ns((a.latency_ms or 0.0) / 1000))

    def health_event(self, event: Any) -> None:
        """Circuit and demotion changes are not spans (the metrics and the log carry them)."""

    def shutdown(self) -> None:
        """Export what is buffered and stop the tracer provider given (the global one is left alone)."""
        shutdown = getattr(self.tracer_provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


class Observers:
    """Several `metrics=` hooks as one: `Router(policy, metrics=Observers(RouterMetrics(), TraceObserver()))`.

    `observe` and `health_event` go to each in turn; any other attribute (`bind`, `refresh`,
    `render` of a `RouterMetrics`) is the first hook's that has it.
    """

    def __init__(self, *hooks: Any) -> None:
        self.hooks = hooks

    def observe(self, record: RequestRecord, attempts: Sequence[AttemptRecord]) -> None:
        """Pass a finished request to every hook."""
        for h in self.hooks:
            h.observe(record, attempts)

    def health_event(self, event: Any) -> None:
        """Pass a health change to every hook that takes them."""
        for h in self.hooks:
            hook = getattr(h, "health_event", None)
            if hook is not None:
                hook(event)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for h in self.__dict__.get("hooks", ()):
            if hasattr(h, name):
                return getattr(h, name)
        raise AttributeError(name)


def otlp_tracer_provider(service_name: str = "llm-router", *, endpoint: str | None = None) -> Any:
    """A `TracerProvider` exporting over OTLP/HTTP in batches (endpoint: the SDK's environment
    variables, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`, unless given).

    Raises:
        ImportError: the `otel` extra is not installed.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ImportError("OTLP export needs the otel extra: pip install 'llm-policy-router[otel]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
