"""`engine report`: one offline HTML file, every chart present with data, no external URL."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli.app import cli
from engine.ops.demo import run_demo
from engine.ops.report import CHARTS, build_report
from engine.ops.timeseries import bucket_size, series
from engine.policy.api import load_policy
from engine.policy.bundled import default_policy_path
from engine.store.decisions import DecisionLog
from engine.store.records import RequestRecord


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    return asyncio.run(run_demo(load_policy(default_policy_path()), out, requests=200, time_scale=0)).db_path


@pytest.fixture(scope="module")
def report_file(demo_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    result = CliRunner().invoke(cli, ["report", "--db", str(demo_log), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in result.output
    return out


@pytest.fixture(scope="module")
def report_html(report_file: Path) -> str:
    return report_file.read_text(encoding="utf-8")


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each script."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def charts(page: str) -> dict[str, list[dict[str, Any]]]:
    """div id -> the traces passed to Plotly.newPlot for it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', page):
        traces, _ = json.JSONDecoder().raw_decode(page, m.end())
        out[m.group(1)] = traces
    return out


def _has_data(trace: dict[str, Any]) -> bool:
    for key in ("y", "values", "z", "x"):
        values = trace.get(key)
        if isinstance(values, list) and any(v not in (None, 0, 0.0) and v != [] for v in _flat(values)):
            return True
    return False


def _flat(values: list[Any]) -> list[Any]:
    return [v for row in values for v in (row if isinstance(row, list) else [row])]


def test_every_chart_is_present_with_data(report_html: str) -> None:
    found = charts(report_html)
    assert list(found) == list(CHARTS)  # all of them, in page order
    for div_id, traces in found.items():
        assert traces, div_id
        assert any(_has_data(t) for t in traces), div_id
        assert f'<div id="{div_id}"' in report_html


def test_charts_hold_the_logs_numbers(report_html: str, demo_log: Path) -> None:
    found = charts(report_html)
    with sqlite3.connect(demo_log) as conn:
        routes = dict(conn.execute("select route, count(*) from requests where outcome != 'bad_request' "
                                   "group by route").fetchall())
        total_cost = conn.execute("select sum(cost_usd) from requests").fetchone()[0]
        models = {m for (m,) in conn.execute("select distinct model from requests where model is not null")}
    pie = found["route-share"][0]
    assert dict(zip(pie["labels"], pie["values"], strict=True)) == {k or "(no route)": v for k, v in routes.items()}
    cost = sum(sum(t["y"]) for t in found["cost-over-time"])
    assert cost == pytest.approx(total_cost)
    assert {t["name"] for t in found["cost-over-time"]} >= models
    latency = found["latency-by-model"]
    assert [t["name"] for t in latency] == ["p50", "p95", "p99"]
    assert set(latency[0]["x"]) == models
    assert all(a <= b for a, b in zip(latency[0]["y"], latency[1]["y"], strict=True))


def test_the_page_needs_no_network(report_html: str) -> None:
    parser = _Tags()
    parser.feed(report_html)
    for tag, attrs in parser.tags:
        for attr in ("src", "href"):
            value = attrs.get(attr)
            assert not value or not re.match(r"(https?:)?//", value), (tag, attr, value)
        assert tag not in ("link", "iframe", "img")
    # plotly.js is inlined in the head, once
    library = [s for s in parser.scripts if "plotly.js" in s[:500] or len(s) > 1_000_000]
    assert len(library) == 1 and len(library[0]) > 1_000_000
    # outside the library itself (which mentions map tile servers it never calls here), no URL at all
    rest = report_html.replace(library[0], "")
    assert not re.search(r"https?://", rest), re.search(r".{60}https?://.{60}", rest)
    assert "cdn" not in rest.lower()


def test_the_embedded_data_is_the_stats(report_html: str, demo_log: Path) -> None:
    parser = _Tags()
    parser.feed(report_html)
    data_tag = next(i for i, (tag, a) in enumerate(t for t in parser.tags if t[0] == "script")
                    if a.get("id") == "report-data")
    data = json.loads(parser.scripts[data_tag])
    with sqlite3.connect(demo_log) as conn:
        assert data["stats"]["totals"]["requests"] == conn.execute("select count(*) from requests").fetchone()[0]
    assert sum(data["series"]["requests"]) == data["stats"]["totals"]["requests"]


def test_missing_data_is_explained_not_drawn(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    with DecisionLog(db) as log:
        for i in range(5):
            log.record(RequestRecord(id=f"r{i}", ts=1_700_000_000.0 + 60 * i, outcome="served", model="m", provider="p",
                                     route="default", query_type="chat", cost_usd=0.01, latency_ms=100.0 + i,
                                     input_tokens=10, output_tokens=5, attempts=1))
    page = build_report(db)
    found = charts(page)
    assert "feedback" not in found and "quota-usage" not in found
    assert 'data-chart="feedback"' in page and 'data-chart="quota-usage"' in page
    assert {"cost-over-time", "route-share", "latency-by-model"} <= set(found)


def test_an_empty_log_still_gives_a_page(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    DecisionLog(db).close()
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0
    page = out.read_text()
    assert charts(page) == {} and page.count('class="empty"') == len(CHARTS)


def test_report_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", "--db", str(tmp_path / "none.db"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "no decision log" in result.output
    assert not (tmp_path / "r.html").exists()


def test_time_buckets() -> None:
    assert bucket_size(0) == 10
    assert bucket_size(600) == 10
    assert bucket_size(601) == 30
    assert bucket_size(20 * 60) == 30
    assert bucket_size(86400) == 3600
    assert bucket_size(365 * 86400) == 7 * 86400


def test_series_counts(demo_log: Path) -> None:
    s = series(demo_log)
    with sqlite3.connect(demo_log) as conn:
        n, errors, hits, refused = conn.execute(
            "select count(*), sum(outcome = 'failed'), sum(cache_hit), sum(outcome = 'refused_quota') "
            "from requests").fetchone()
        attempts = conn.execute("select count(*) from attempts where outcome != 'skipped'").fetchone()[0]
    assert (sum(s.requests), sum(s.errors), sum(s.cache_hits), sum(s.quota_refused)) == (n, errors, hits, refused)
    assert sum(s.attempts) == attempts
    assert all(b - a == s.bucket_s for a, b in zip(s.starts, s.starts[1:], strict=False))
    assert all(list(v) == sorted(v) for v in s.spend_by_tenant.values())  # cumulative


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_a_browser_with_no_network_draws_every_chart(report_file: Path) -> None:
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="chromium-report-")
    try:
        # every request would go to a proxy that does not exist: only the file itself can load
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
             "--proxy-server=127.0.0.1:9", "--virtual-time-budget=10000", "--dump-dom", report_file.as_uri()],
            capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    for div_id in CHARTS:
        start = dom.find(f'id="{div_id}"')
        assert start > 0, div_id
        # plotly replaced the empty div with its rendered SVG
        assert 'class="main-svg"' in dom[start:start + 5000], div_id
