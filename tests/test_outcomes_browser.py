"""One outcome vocabulary everywhere, checked in headless Chromium with every outcome in the traffic.

`engine serve` on the vendor fakes gets served, cached, failed, rate-limited, policy-refused,
quota-refused, malformed and (circuits open) no-model requests. The decision log's counts
(`engine stats`) must be what the dashboard's live chart, the dashboard's report chart, the
`engine report` page and `/metrics` show, each outcome under its own legend entry and colour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.ops.logstats import collect
from engine.ops.report import write_report
from engine.server.config import ServeConfig
from engine.store.outcomes import COLORS, LABELS, OUTCOMES
from tests.fakes import FakeVendorServer
from tests.test_dashboard_browser import CHROMIUM, DevTools, _problems, browser  # noqa: F401 (fixture)
from tests.test_serve_support import ServerThread, fake_policy

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install "
                                "chromium`): the charts are not rendered in a browser")

ROUTES = """
routes:
  - name: frugal
    when: "meta.team == 'frugal'"
    max_cost_usd: 0.0000001
    candidates: [gpt-mini, claude]
  - name: default
    strategy: ordered
    candidates: [gpt-mini, claude]
"""
EXTRA = """cache: {enabled: true, ttl_s: 3600, when: "temperature == 0"}
quotas:
  - {name: tiny-budget, scope: [tenant], window: day, limit: {cost_usd: 0.01}, on_exceed: reject}
"""


def _ask(url: str, content: str = "hello", **body: Any) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      json={"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 20,
                            **body})


def _traffic(s: ServerThread, fake: FakeVendorServer) -> dict[str, int]:
    """Every outcome at least once; returns how many of each HTTP status were answered."""
    statuses: dict[str, int] = {}

    def note(r: httpx.Response) -> None:
        statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

    # claude first, pinned: its SDK is imported now, not inside the timeout of a fallback below
    note(_ask(s.url, "served by claude", model="claude"))
    for i in range(4):
        note(_ask(s.url, f"served {i}"))
    for _ in range(3):  # the first is served, the other two come from the cache
        note(_ask(s.url, "the same question", temperature=0))
    note(_ask(s.url, "spend nothing", metadata={"team": "frugal"}))  # every model costs too much: 422
    note(_ask(s.url, "write a novel", max_tokens=100_000))  # worst case over the tenant's $0.01: 429
    note(_ask(s.url, "   "))  # blank: the router refuses it before routing: 400
    fake.script("openai", "rate_limit")
    fake.script("anthropic", "rate_limit")
    note(_ask(s.url, "busy"))  # both vendors answer 429: 429
    fake.script("openai", "server_error")
    fake.script("anthropic", "server_error")
    note(_ask(s.url, "broken"))  # both fail: 503
    fake.set_mode("openai", "server_error")
    fake.set_mode("anthropic", "server_error")
    for i in range(20):  # until both circuits are open: then 503 no_model_available
        r = _ask(s.url, f"outage {i}")
        note(r)
        if r.json()["error"]["code"] == "no_model_available":
            break
    else:
        raise AssertionError("the circuits never opened")
    fake.set_mode("openai", None)
    fake.set_mode("anthropic", None)
    return statuses


@pytest.fixture
def served(fake: FakeVendorServer, tmp_path: Path) -> Iterator[tuple[ServerThread, Path, dict[str, int]]]:
    log = tmp_path / "decisions.db"
    policy = tmp_path / "policy.yaml"
    # timeout_s 30: the first call to a vendor imports its SDK inside the attempt's timeout
    text = fake_policy(fake, log=str(log), routes=ROUTES, extra=EXTRA).replace("timeout_s: 5", "timeout_s: 30")
    policy.write_text(text.replace(
        "health: {min_requests: 1000}", "health: {min_requests: 4, open_circuit: {error_rate: 0.5, cooldown_s: 600}}"))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        statuses = _traffic(s, fake)
        live = s.service.holder.live
        assert live is not None and live.router.recorder.log is not None
        s.call(live.router.recorder.log.aflush())
        yield s, log, statuses


def _evaluate(b: DevTools, expression: str) -> Any:
    """The value of `expression` in the page; a JavaScript exception fails the test with its text."""
    result = b.send("Runtime.evaluate", expression=expression, returnByValue=True)
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return result["result"].get("value")


def _traces(b: DevTools, div: str) -> list[dict[str, Any]]:
    """(outcome, legend name, colour, total) of each trace of a plotly chart, read from the page."""
    out = _evaluate(b,
        f"JSON.stringify(document.getElementById({json.dumps(div)}).data.map(t => ({{meta: t.meta, name: t.name, "
        "color: t.marker && t.marker.color, total: t.y.reduce((a, v) => a + v, 0)})))")
    assert out, f"chart {div} has no data"
    traces: list[dict[str, Any]] = json.loads(out)
    return traces


def _legend(b: DevTools, div: str) -> list[str]:
    """The legend entries as drawn (SVG text)."""
    selector = json.dumps("#" + div + " .legendtext")
    return json.loads(b.evaluate(f"JSON.stringify([...document.querySelectorAll({selector})]"
                                 ".map(e => e.textContent))"))


def _expect(traces: list[dict[str, Any]], counts: dict[str, int]) -> None:
    assert {t["meta"]: t["total"] for t in traces} == counts
    for t in traces:
        assert t["name"] == f"{LABELS[t['meta']]} ({counts[t['meta']]:,})"
        assert t["color"] == COLORS[t["meta"]]
    assert len({t["color"] for t in traces}) == len(traces)  # one colour per outcome


def _wait(b: DevTools, expression: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while not b.evaluate(f"!!({expression})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.1)


def test_every_outcome_has_its_own_legend_entry_with_the_logs_counts(
        served: tuple[ServerThread, Path, dict[str, int]], browser: DevTools, tmp_path: Path) -> None:  # noqa: F811
    s, log, statuses = served
    totals = collect(log).totals
    counts = {o: n for o, n in totals["outcomes"].items() if n}
    assert set(counts) == set(OUTCOMES), counts  # every outcome happened
    assert counts["cached"] == 2 and counts["refused_policy"] == counts["refused_quota"] == 1
    assert counts["bad_request"] == counts["rate_limited"] == counts["no_model"] == 1
    assert statuses["503"] == counts["failed"] + counts["no_model"]
    assert statuses["429"] == counts["refused_quota"] + counts["rate_limited"]

    # /metrics: the same vocabulary in the outcome label
    metrics: dict[str, float] = {}
    for m in re.finditer(r'^llm_router_requests_total\{([^}]*)\} (\S+)$', httpx.get(s.url + "/metrics").text, re.M):
        outcome = re.search(r'outcome="([^"]+)"', m.group(1))
        assert outcome is not None
        metrics[outcome.group(1)] = metrics.get(outcome.group(1), 0) + float(m.group(2))
    assert metrics == {o: float(n) for o, n in counts.items()}

    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.send(f"{domain}.enable")
    browser.send("Page.navigate", url=s.url + "/dashboard")
    _wait(browser, "document.querySelector('#chart-timeline[data-rendered=\"1\"]') && "
                   "document.querySelector('#report-requests-over-time[data-rendered=\"1\"]')")
    _expect(_traces(browser, "chart-timeline"), counts)
    _expect(_traces(browser, "report-requests-over-time"), counts)
    assert _legend(browser, "chart-timeline") == [f"{LABELS[o]} ({counts[o]:,})" for o in OUTCOMES]
    assert _legend(browser, "report-requests-over-time") == [f"{LABELS[o]} ({counts[o]:,})" for o in OUTCOMES]
    # the circuits are near the top, before the charts
    assert browser.evaluate("document.getElementById('providers').compareDocumentPosition("
                            "document.getElementById('chart-timeline')) & Node.DOCUMENT_POSITION_FOLLOWING")
    assert "open" in browser.evaluate("document.querySelector('#providers tbody').innerText")
    # the per-model chart counts failed calls, of models that never served a request too
    models = json.loads(browser.evaluate("JSON.stringify(document.getElementById('chart-models').data.map("
                                         "t => [t.name, Object.fromEntries(t.x.map((x, i) => [x, t.y[i]]))]))"))
    attempts = {a["model"]: a for a in collect(log).attempts}
    assert dict(models)["failed calls"] == {m: a["failed"] for m, a in attempts.items()}

    report = write_report(log, tmp_path / "report.html")
    browser.send("Page.navigate", url=report.as_uri())
    _wait(browser, "document.querySelector('#requests-over-time .main-svg')")
    _expect(_traces(browser, "requests-over-time"), counts)
    assert _legend(browser, "requests-over-time") == [f"{LABELS[o]} ({counts[o]:,})" for o in OUTCOMES]
    facts = json.loads(browser.evaluate(
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('[data-outcome]')].map("
        "e => [e.dataset.outcome, Number(e.querySelector('b').textContent.replace(/,/g, ''))])))"))
    assert facts == counts
    browser.send("Runtime.evaluate", expression="0")  # drain pending events
    assert _problems([e for e in browser.events if not e.get("params", {}).get("request", {}).get(
        "url", "").startswith("file://")]) == []
