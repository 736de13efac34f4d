"""Prometheus metrics of an embedded router: exact counts, bounded labels, parseable exposition."""

from __future__ import annotations

import importlib.util
import json
import re
import urllib.request
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from adapters.base import Price
from adapters.errors import RateLimited, ServerError
from adapters.simulated import SimulatedAdapter
from engine.ops.demo import demo_policy
from engine.ops.metrics import RouterMetrics
from engine.policy.api import load_policy, load_policy_text
from engine.policy.bundled import default_policy_path
from engine.policy.model import Policy
from engine.runtime.clock import ManualClock
from engine.runtime.router import Router

ROOT = Path(__file__).resolve().parent.parent
POLICY = """
version: 1
providers:
  pa: {adapter: simulated}
  pb: {adapter: simulated}
models:
  a: {provider: pa, price: {input: 1, output: 2}, context_window: 8000, scores: {chat: 4}}
  b: {provider: pb, price: {input: 2, output: 4}, context_window: 8000, scores: {chat: 4}}
routes:
  - name: default
    strategy: ordered
    candidates: [a, b]
quotas:
  - {name: daily, scope: [tenant], window: day, limit: {requests: 5}, on_exceed: reject}
cache: {enabled: true, when: "temperature == 0"}
retry: {max_attempts: 2, backoff_ms: 1, max_backoff_ms: 2}
health: {min_requests: 3, open_circuit: {error_rate: 0.5, cooldown_s: 30}, demote: {error_rate: 0.99}}
"""


def families(text: str) -> dict[str, Any]:
    """Parse an exposition like promtool would; fails on any syntax error."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def _router(metrics: RouterMetrics, **kw: Any) -> tuple[Router, dict[str, SimulatedAdapter], Policy]:
    policy = load_policy_text(POLICY, "metrics-policy.yaml", env={})
    sims = {n: SimulatedAdapter(m.provider, m.id, price=Price(m.price.input, m.price.output), time_scale=0)
            for n, m in policy.models.items()}
    router = Router(policy, log_path=None, adapters=dict(sims), metrics=metrics, clock=ManualClock(), **kw)
    metrics.bind(router)
    return router, sims, policy


async def _traffic(router: Router, sims: dict[str, SimulatedAdapter]) -> list[Any]:
    results = [await router.generate("first", meta={"tenant": "t"})]           # a
    sims["a"].script(ServerError)
    results.append(await router.generate("second", meta={"tenant": "t"}))      # a fails, a again
    sims["a"].script(RateLimited)
    results.append(await router.generate("third", meta={"tenant": "t"}))       # a 429, b at once
    for _ in range(2):
        results.append(await router.generate("cached", meta={"tenant": "t"}, temperature=0))  # a, then cache
    return results


async def test_counters_match_the_traffic() -> None:
    metrics = RouterMetrics()
    router, sims, _ = _router(metrics)
    results = await _traffic(router, sims)
    v = metrics.registry.get_sample_value
    requests = "llm_router_requests_total"
    assert v(requests, {"route": "default", "model": "a", "provider": "pa", "outcome": "served"}) == 3
    assert v(requests, {"route": "default", "model": "a", "provider": "pa", "outcome": "cached"}) == 1
    assert v(requests, {"route": "default", "model": "b", "provider": "pb", "outcome": "served"}) == 1
    assert v("llm_router_attempts_total", {"model": "a", "provider": "pa", "outcome": "ok"}) == 3
    assert v("llm_router_attempts_total", {"model": "a", "provider": "pa", "outcome": "error"}) == 2
    assert v("llm_router_errors_total", {"model": "a", "provider": "pa", "error_class": "ServerError"}) == 1
    assert v("llm_router_errors_total", {"model": "a", "provider": "pa", "error_class": "RateLimited"}) == 1
    assert v("llm_router_fallbacks_total", {"route": "default", "model": "b"}) == 1
    assert v("llm_router_cache_hits_total", {"route": "default"}) == 1
    assert v("llm_router_cache_saved_usd_total", {"route": "default"}) == pytest.approx(results[3].cost_usd)
    assert v("llm_router_query_type_requests_total", {"query_type": "chat", "model": "a"}) == 4
    assert v("llm_router_request_duration_seconds_count", {"route": "default", "model": "a"}) == 4
    assert v("llm_router_attempt_duration_seconds_count", {"model": "a", "provider": "pa", "outcome": "error"}) == 2
    paid = [r for r in results if not r.cached]
    for model, provider in (("a", "pa"), ("b", "pb")):
        mine = [r for r in paid if r.model == model]
        assert v("llm_router_tokens_total", {"model": model, "provider": provider, "direction": "input"}) == sum(
            r.input_tokens for r in mine)
        assert v("llm_router_cost_usd_total", {"route": "default", "model": model, "provider": provider}) == \
            pytest.approx(sum(r.cost_usd for r in mine))
    await router.aclose()


async def test_pulled_gauges_follow_the_router() -> None:
    metrics = RouterMetrics()
    router, sims, policy = _router(metrics)
    await _traffic(router, sims)
    fams = families(metrics.render().decode())  # a bound router is refreshed at scrape time
    remaining = {(s.labels["quota"], s.labels["measure"], s.labels["scope"]): s.value
                 for s in fams["llm_router_quota_remaining"].samples}
    # the cache hit never reached the quota; the rate-limited attempt's reservation was released
    assert remaining == {("daily", "requests", "most_used"): 1.0}
    assert fams["llm_router_quota_used_ratio"].samples[0].value == pytest.approx(0.8)
    assert fams["llm_router_cache_hit_ratio"].samples[0].value == pytest.approx(0.5)
    assert fams["llm_router_cache_entries"].samples[0].value == 1
    assert fams["llm_router_policy_info"].samples[0].labels == {"digest": policy.digest[:12]}
    circuits = {s.labels["model"]: s.value for s in fams["llm_router_circuit_state"].samples}
    assert circuits == {"a": 0.0, "b": 0.0}
    for _ in range(3):  # three failures in the window open b's circuit (min_requests 3, 50%)
        router.health.record("b", ok=False, latency_ms=5.0, error_class="ServerError")
    v = metrics.registry.get_sample_value
    assert v("llm_router_health_events_total", {"model": "b", "kind": "circuit_open"}) == 1
    assert v("llm_router_circuit_state", {"model": "b", "provider": "pb"}) == 2.0  # set by the event at once
    fams = families(metrics.render().decode())
    assert {s.labels["model"]: s.value for s in fams["llm_router_circuit_state"].samples}["b"] == 2.0
    await router.aclose()


async def test_tenants_are_not_labels_unless_allowed() -> None:
    metrics = RouterMetrics()
    router, _, _ = _router(metrics)
    for i in range(12):
        await router.generate(f"q{i}", meta={"tenant": f"tenant-{i}"})
    fams = families(metrics.render().decode())
    for fam in fams.values():
        for s in fam.samples:
            assert "tenant" not in s.labels and not any("tenant-" in str(v) for v in s.labels.values()), s
    assert len([s for s in fams["llm_router_requests"].samples if s.name.endswith("_total")]) == 1
    await router.aclose()

    labelled = RouterMetrics(tenant_label=True)
    router, _, _ = _router(labelled)
    for i in range(3):
        await router.generate(f"q{i}", meta={"tenant": f"tenant-{i}"})
    fams = families(labelled.render().decode())
    tenants = {s.labels["tenant"] for s in fams["llm_router_requests"].samples if s.name.endswith("_total")}
    assert tenants == {"tenant-0", "tenant-1", "tenant-2"}
    scopes = {s.labels["scope"] for s in fams["llm_router_quota_remaining"].samples}
    assert scopes == {"tenant=tenant-0", "tenant=tenant-1", "tenant=tenant-2"}
    await router.aclose()


def test_two_routers_do_not_clash() -> None:
    a, b = RouterMetrics(), RouterMetrics()
    assert a.registry is not b.registry
    assert families(a.render().decode()).keys() == families(b.render().decode()).keys()


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embed_metrics", ROOT / "examples" / "embed_metrics.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_app_serves_parseable_metrics(tmp_path: Path) -> None:
    app = _example().create_app(demo_policy(load_policy(default_policy_path()), 0.0),
                                log_path=tmp_path / "d.db")
    with TestClient(app) as client:
        ids = []
        for i, prompt in enumerate(["What is 2+2?", "Fix this: def f(: pass", "Summarize: the sky is blue."]):
            r = client.post("/generate", json={"prompt": prompt, "meta": {"tenant": f"t{i}"}})
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
        assert client.post("/generate", json={"prompt": " "}).status_code == 400
        assert client.post("/feedback", json={"request_id": ids[0], "score": 4}).status_code == 200
        scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"] == app.state.metrics.content_type
    assert scrape.headers["content-type"].startswith("text/plain; version=")
    fams = families(scrape.text)
    outcomes: Counter[str] = Counter()
    for s in fams["llm_router_requests"].samples:  # one sample per (outcome, route, ...) label set
        if s.name == "llm_router_requests_total":
            outcomes[s.labels["outcome"]] += s.value
    assert outcomes == {"served": 3.0, "bad_request": 1.0}, outcomes
    assert {s.labels["model"] for s in fams["llm_router_circuit_state"].samples} >= {"gpt-4o-mini", "claude-sonnet"}
    assert fams["llm_router_request_duration_seconds"].type == "histogram"


def test_http_helpers_serve_the_registry() -> None:
    metrics = RouterMetrics()
    metrics.requests.labels("default", "a", "pa", "ok").inc()
    server, thread = metrics.start_http_server(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert "llm_router_requests_total" in families(body)["llm_router_requests"].samples[0].name
    with TestClient(metrics.asgi_app()) as client:
        r = client.get("/metrics")
    assert r.status_code == 200 and families(r.text).keys() == families(body).keys()


async def test_grafana_dashboard_and_docs_name_real_metrics() -> None:
    metrics = RouterMetrics()
    router, sims, _ = _router(metrics)
    await _traffic(router, sims)
    known: set[str] = set()
    documented: set[str] = set()
    for fam in metrics.registry.collect():
        known.update(s.name for s in fam.samples)
        documented.add(fam.name + "_total" if fam.type == "counter" else fam.name)
    await router.aclose()
    known |= documented  # a counter with no sample yet still has its `_total` name
    dash = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [t["query"]["query"] for t in dash["templating"]["list"] if isinstance(t.get("query"), dict)]
    used = {n for e in exprs for n in re.findall(r"llm_router_[a-z_]+", e)}
    assert used and used <= known, used - known
    assert len(dash["panels"]) >= 12 and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    table = set(re.findall(r"^\| `(llm_router_[a-z_]+)`", (ROOT / "docs" / "operations.md").read_text(), re.M))
    assert table == documented


def test_queued_observations_are_all_counted_by_any_scrape() -> None:
    # observe() queues; a scrape (any thread) counts the queue first: nothing is lost or counted twice
    import threading
    import time as _time

    from prometheus_client import generate_latest

    from engine.store.records import AttemptRecord, RequestRecord

    metrics = RouterMetrics()
    rec = RequestRecord(id="r", ts=_time.time(), route="default", model="a", provider="pa", attempts=1,
                        outcome="served", input_tokens=3, output_tokens=2, cost_usd=0.5, latency_ms=4.0)
    att = (AttemptRecord(request_id="r", n=1, model="a", provider="pa", ts=_time.time(), latency_ms=3.0,
                         outcome="ok", input_tokens=3, output_tokens=2, cost_usd=0.5),)
    labels = {"route": "default", "model": "a", "provider": "pa", "outcome": "served"}
    metrics.observe(rec, att)
    # a scrape restricted to some names (`?name[]=` on /metrics) counts the queue too
    only = generate_latest(metrics.registry.restricted_registry(["llm_router_requests_total"])).decode()
    assert 'llm_router_requests_total{model="a",outcome="served",provider="pa",route="default"} 1.0' in only
    assert metrics.registry.get_sample_value("llm_router_requests_total", labels) == 1  # one queued, then scraped
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            metrics.render()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(20_000):
            metrics.observe(rec, att)
    finally:
        stop.set()
        scraper.join()
    v = metrics.registry.get_sample_value
    assert v("llm_router_requests_total", labels) == 20_001
    assert v("llm_router_cost_usd_total", {"route": "default", "model": "a", "provider": "pa"}) == 0.5 * 20_001
    assert v("llm_router_attempt_duration_seconds_count", {"model": "a", "provider": "pa", "outcome": "ok"}) == 20_001
    assert v("llm_router_tokens_total", {"model": "a", "provider": "pa", "direction": "input"}) == 3 * 20_001
