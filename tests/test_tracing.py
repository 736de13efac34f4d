"""OpenTelemetry traces of the router: the SDK's in-memory exporter, and OTLP/HTTP to a receiver on
127.0.0.1, with the GenAI semantic-convention attributes and the router's own."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from adapters.base import Price
from adapters.errors import ServerError
from adapters.simulated import SimulatedAdapter
from engine.errors import AllModelsFailed
from engine.ops.metrics import RouterMetrics
from engine.ops.tracing import Observers, TraceObserver, otlp_tracer_provider
from engine.policy.api import load_policy_text
from engine.policy.model import Policy
from engine.runtime.clock import ManualClock
from engine.runtime.result import StreamDone
from engine.runtime.router import Router
from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServerThread, fake_policy

POLICY = """
version: 1
providers:
  oa: {adapter: simulated}
  an: {adapter: simulated}
models:
  mini: {provider: oa, id: gpt-4o-mini, price: {input: 1, output: 2}, context_window: 8000, scores: {chat: 4}}
  haiku: {provider: an, id: claude-haiku-4-5, price: {input: 2, output: 4}, context_window: 8000, scores: {chat: 4}}
routes:
  - name: default
    strategy: ordered
    candidates: [mini, haiku]
retry: {max_attempts: 2, backoff_ms: 1, max_backoff_ms: 2}
log: {prompts: PROMPTS}
"""


def _router(hook: Callable[[Policy], Any], prompts: str = "hash") -> tuple[Router, dict[str, SimulatedAdapter]]:
    """A router on simulated vendors, given `hook(policy)` as its `metrics=` observer."""
    policy = load_policy_text(POLICY.replace("PROMPTS", prompts), "tracing.yaml", env={})
    sims = {n: SimulatedAdapter(m.provider, m.id, price=Price(m.price.input, m.price.output), time_scale=0)
            for n, m in policy.models.items()}
    return Router(policy, log_path=None, adapters=dict(sims), metrics=hook(policy), clock=ManualClock()), sims


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_a_fallback_is_a_request_span_with_one_span_per_attempt(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    router, sims = _router(lambda policy: TraceObserver(policy=policy, tracer_provider=provider))
    sims["mini"].script(ServerError, ServerError)  # both tries of mini fail; haiku serves
    result = await router.generate("Say hello", max_tokens=50, temperature=0.2, meta={"tenant": "acme"})
    await router.aclose()
    finished = exporter.get_finished_spans()
    [request] = [s for s in finished if s.parent is None]
    attempts = sorted((s for s in finished if s.parent is not None), key=lambda s: s.start_time or 0)
    assert [s.name for s in attempts] == ["chat gpt-4o-mini", "chat gpt-4o-mini", "chat claude-haiku-4-5"]
    assert all(s.parent is not None and s.parent.span_id == request.context.span_id for s in attempts)
    assert all(s.kind == SpanKind.CLIENT for s in attempts) and request.kind == SpanKind.INTERNAL
    a = request.attributes or {}
    assert request.name == "chat default"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "simulated"
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("gpt-4o-mini", "claude-haiku-4-5")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        result.input_tokens, result.output_tokens)
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.2
    assert (a["llm_router.route"], a["llm_router.query_type"], a["llm_router.outcome"]) == (
        "default", result.query_type, "served")
    assert tuple(a["llm_router.plan"]) == ("mini", "haiku") and a["llm_router.fallbacks"] == 1
    assert a["llm_router.request_id"] == result.request_id and a["llm_router.tenant"] == "acme"
    assert a["llm_router.cache_hit"] is False and "gen_ai.input.messages" not in a  # prompts: hash
    failed, _, served = attempts
    assert (failed.attributes or {})["error.type"] == "ServerError" and failed.status.status_code == StatusCode.ERROR
    assert "error.type" not in (served.attributes or {}) and served.status.status_code == StatusCode.UNSET
    assert (served.attributes or {})["gen_ai.usage.output_tokens"] == result.output_tokens
    # explicit times, from the record: every attempt lies inside its request
    assert request.start_time is not None and request.end_time is not None
    for s in attempts:
        assert s.start_time is not None and s.end_time is not None
        assert request.start_time <= s.start_time <= s.end_time <= request.end_time + 1_000_000


async def test_finish_reasons_and_usage_are_on_the_request_and_the_serving_attempt(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    router, sims = _router(lambda policy: TraceObserver(policy=policy, tracer_provider=provider))
    sims["mini"].script(ServerError)  # the first try fails, the retry answers
    cut = await router.generate("Tell me a long story about tracing", max_tokens=2)
    streamed = [e async for e in router.stream("Say hello", max_tokens=200)]
    await router.aclose()
    assert cut.finish_reason == "length"
    done = streamed[-1]
    assert isinstance(done, StreamDone) and done.result.finish_reason == "stop"
    finished = exporter.get_finished_spans()
    requests = sorted((s for s in finished if s.parent is None), key=lambda s: s.start_time or 0)
    assert len(requests) == 2
    for span, result in zip(requests, (cut, done.result), strict=True):
        a = span.attributes or {}
        # a list, as the conventions say (the SDK keeps sequences as tuples)
        assert tuple(a["gen_ai.response.finish_reasons"]) == (result.finish_reason,)
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
            result.input_tokens, result.output_tokens)
    first = requests[0].context.span_id
    failed, served = sorted((s for s in finished if s.parent is not None and s.parent.span_id == first),
                            key=lambda s: s.start_time or 0)
    assert "gen_ai.response.finish_reasons" not in (failed.attributes or {})  # it answered nothing
    assert (failed.attributes or {})["gen_ai.usage.output_tokens"] == 0
    sa = served.attributes or {}
    assert tuple(sa["gen_ai.response.finish_reasons"]) == ("length",)
    assert (sa["gen_ai.usage.input_tokens"], sa["gen_ai.usage.output_tokens"]) == (cut.input_tokens, cut.output_tokens)
    [stream_attempt] = [s for s in finished if s.parent is not None and s.parent.span_id == requests[1].context.span_id]
    assert tuple((stream_attempt.attributes or {})["gen_ai.response.finish_reasons"]) == ("stop",)


async def test_a_failed_request_is_an_error_and_full_prompts_are_attached(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    metrics = RouterMetrics()
    router, sims = _router(lambda policy: Observers(metrics, TraceObserver(policy=policy, tracer_provider=provider)),
                           prompts="full")
    sims["mini"].script(ServerError, ServerError)
    sims["haiku"].script(ServerError, ServerError)
    with pytest.raises(AllModelsFailed):
        await router.generate("Say hello to the tracer")
    await router.aclose()
    [request] = [s for s in exporter.get_finished_spans() if s.parent is None]
    a = request.attributes or {}
    assert a["llm_router.outcome"] == "failed" and a["error.type"] == "AllModelsFailed"
    assert request.status.status_code == StatusCode.ERROR
    assert "Say hello to the tracer" in a["gen_ai.input.messages"]  # log.prompts: full
    assert len(exporter.get_finished_spans()) == 5  # the request and four attempts
    # the metrics got the same request through the fan-out
    assert metrics.registry.get_sample_value("llm_router_requests_total", {
        "route": "default", "model": "none", "provider": "none", "outcome": "failed"}) == 1


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:  # the stdlib's name
        body = self.rfile.read(int(self.headers["content-length"]))
        assert self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        self.received.append(msg)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: Any) -> None:
        pass


async def test_spans_reach_an_otlp_http_receiver() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received = []
    try:
        provider = otlp_tracer_provider("router-under-test",
                                        endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1/traces")
        made: list[TraceObserver] = []

        def observer_of(policy: Policy) -> TraceObserver:
            made.append(TraceObserver(policy=policy, tracer_provider=provider))
            return made[0]

        router, _ = _router(observer_of)
        [observer] = made
        result = await router.generate("hello over OTLP")
        await router.aclose()
        observer.shutdown()  # flushes the batch
    finally:
        server.shutdown()
        server.server_close()
    spans = [(rs, s) for msg in _Receiver.received for rs in msg.resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    assert {s.name for _, s in spans} == {"chat default", "chat gpt-4o-mini"}
    rs, request = next((rs, s) for rs, s in spans if s.name == "chat default")
    resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
    assert resource["service.name"] == "router-under-test"
    attrs = {kv.key: kv.value for kv in request.attributes}
    assert attrs["llm_router.request_id"].string_value == result.request_id
    assert attrs["gen_ai.usage.output_tokens"].int_value == result.output_tokens


def test_engine_serve_otel_exports_each_request(fake: FakeVendorServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received = []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/v1/traces")
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    try:
        with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0, otel=True)) as s:
            r = httpx.post(s.url + "/v1/chat/completions", timeout=30,
                           json={"model": "auto", "messages": [{"role": "user", "content": "trace me"}]})
        # the server's shutdown flushed the exporter
    finally:
        server.shutdown()
        server.server_close()
    spans = {s.name: s for msg in _Receiver.received for rs in msg.resource_spans for ss in rs.scope_spans
             for s in ss.spans}
    assert set(spans) == {"chat default", "chat gpt-4o-mini"}
    attrs = {kv.key: kv.value for kv in spans["chat default"].attributes}
    assert attrs["llm_router.request_id"].string_value == r.headers["x-request-id"]
    assert attrs["gen_ai.provider.name"].string_value == "openai"
