"""`engine stats` on decision logs written by real router runs over simulated providers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.base import Price
from adapters.errors import ServerError
from adapters.simulated import SimulatedAdapter
from engine.cli.app import cli
from engine.errors import EngineError
from engine.ops.demo import run_demo
from engine.ops.logstats import collect, parse_since
from engine.policy.api import load_policy, load_policy_text
from engine.policy.bundled import default_policy_path
from engine.policy.model import Policy
from engine.runtime.router import Router
from engine.store.outcomes import OUTCOMES

POLICY = """
version: 1
providers:
  pa: {adapter: simulated}
  pb: {adapter: simulated}
models:
  a: {provider: pa, price: {input: 1, output: 2}, context_window: 8000, scores: {chat: 4, code: 4}}
  b: {provider: pb, price: {input: 2, output: 4}, context_window: 8000, scores: {chat: 4, code: 4}}
signals:
  code: {regex: ['```']}
query_types:
  - {type: code, when: "signals.code"}
  - {type: chat}
routes:
  - name: code
    when: "query_type == 'code'"
    strategy: ordered
    candidates: [b, a]
  - name: default
    strategy: ordered
    candidates: [a, b]
quotas:
  - {name: daily, scope: [tenant], window: day, limit: {requests: 3}, on_exceed: reject}
cache: {enabled: true, when: "temperature == 0"}
retry: {max_attempts: 1}
health: {min_requests: 1000}
"""


def _adapters(policy: Policy) -> dict[str, SimulatedAdapter]:
    return {n: SimulatedAdapter(m.provider, m.id, price=Price(m.price.input, m.price.output), time_scale=0)
            for n, m in policy.models.items()}


async def _scripted_run(db: Path) -> Policy:
    """Eight requests whose every outcome is known (see the assertions)."""
    policy = load_policy_text(POLICY, "stats-policy.yaml", env={})
    sims = _adapters(policy)
    router = Router(policy, log_path=db, adapters=dict(sims))
    t1, t2 = {"tenant": "t1"}, {"tenant": "t2"}
    r1 = await router.generate("hello there", meta=t1)                       # a
    sims["a"].script(ServerError)
    await router.generate("hello again", meta=t1)                            # a fails, b serves
    r3 = await router.generate("fix ```x```", meta=t1)                       # code route: b
    with pytest.raises(EngineError):
        await router.generate("one more", meta=t1)                           # quota: 4th request of t1
    with pytest.raises(EngineError):
        await router.generate("   ", meta=t2)                                # bad request
    await router.generate("support hours?", meta=t2, temperature=0)          # a
    await router.generate("support hours?", meta=t2, temperature=0)          # cache hit
    sims["a"].script(ServerError)
    sims["b"].script(ServerError)
    with pytest.raises(EngineError):
        await router.generate("doomed", meta=t2)                             # a and b fail
    router.feedback(r1.request_id, 5, "good")
    router.feedback(r3.request_id, 2, "bad")
    await router.aclose()
    return policy


@pytest.fixture(scope="module")
def scripted_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Policy]:
    db = tmp_path_factory.mktemp("stats") / "decisions.db"
    policy = asyncio.run(_scripted_run(db))
    return db, policy


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = asyncio.run(run_demo(load_policy(default_policy_path()), out, requests=200, time_scale=0))
    return result.db_path


def _stats(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["stats", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_totals_of_a_scripted_run(scripted_log: tuple[Path, Policy]) -> None:
    t = _stats("--db", str(scripted_log[0]))["totals"]
    assert t["requests"] == 8
    assert t["outcomes"] == {"served": 4, "cached": 1, "failed": 1, "refused_policy": 0, "refused_quota": 1,
                             "rate_limited": 0, "no_model": 0, "bad_request": 1}  # the vocabulary's order
    assert list(t["outcomes"]) == list(OUTCOMES)
    assert (t["answered"], t["errors"], t["quota_refused"]) == (5, 1, 1)
    assert t["cache_hits"] == 1 and t["cache_hit_rate"] == pytest.approx(1 / 8)
    assert t["fallbacks"] == 2  # the request b served after a failed, and the one that failed on both
    assert t["saved_cost_usd"] > 0
    assert t["feedback_count"] == 2 and t["feedback_mean"] == pytest.approx(3.5)


def test_groups_and_attempts_of_a_scripted_run(scripted_log: tuple[Path, Policy]) -> None:
    data = _stats("--db", str(scripted_log[0]), "--by", "model")
    groups = {g["model"]: g for g in data["groups"]}
    assert {k: g["requests"] for k, g in groups.items()} == {"a": 3, "b": 2, None: 3}
    assert groups["a"]["cache_hits"] == 1 and groups["b"]["fallbacks"] == 1
    attempts = {a["model"]: a for a in data["attempts"]}
    assert (attempts["a"]["attempts"], attempts["a"]["failed"], attempts["a"]["errors"]) == (4, 2, {"ServerError": 2})
    assert (attempts["b"]["attempts"], attempts["b"]["failed"]) == (3, 1)
    assert data["quota_refusals"] == [{"tenant": "t1", "quota": "daily", "refused": 1}]
    feedback = {(f["model"], f["query_type"]): f for f in data["feedback"]}
    assert feedback[("a", "chat")]["mean"] == 5 and feedback[("b", "code")]["mean"] == 2
    assert feedback[("b", "code")]["labels"] == {"bad": 1}
    by_route = {g["route"]: g["requests"] for g in _stats("--db", str(scripted_log[0]), "--by", "route")["groups"]}
    assert by_route == {"default": 6, "code": 1, None: 1}


def test_quota_rows_carry_limits_with_the_policy(scripted_log: tuple[Path, Policy]) -> None:
    db, policy = scripted_log
    report = collect(db, policy=policy)
    t1 = next(q for q in report.quotas if q["scope_key"] == "tenant=t1")
    assert (t1["quota"], t1["requests"], t1["limit_requests"], t1["used_ratio"]) == ("daily", 3, 3, 1.0)
    assert t1["tenant"] == "t1"
    assert all("used_ratio" not in q for q in collect(db).quotas)  # no policy: no limits to compare with


@pytest.mark.parametrize("by", ["model", "route", "tenant", "query_type"])
def test_every_grouping_adds_up(demo_log: Path, by: str) -> None:
    data = _stats("--db", str(demo_log), "--by", by)
    with sqlite3.connect(demo_log) as conn:
        total, cost = conn.execute("select count(*), sum(cost_usd) from requests").fetchone()
    assert data["totals"]["requests"] == total == 200
    assert sum(g["requests"] for g in data["groups"]) == total
    assert sum(g["share"] for g in data["groups"]) == pytest.approx(1.0)
    assert sum(g["cost_usd"] for g in data["groups"]) == pytest.approx(cost)
    assert data["by"] == by


def test_demo_log_quotas_use_the_matching_bundled_policy(demo_log: Path) -> None:
    data = _stats("--db", str(demo_log))
    acme = next(q for q in data["quotas"] if q["quota"] == "tenant-daily-spend" and q["scope_key"] == "tenant=acme")
    assert acme["limit_cost_usd"] == 5.0 and acme["used_ratio"] > 0.9


def test_since_filters_requests(demo_log: Path) -> None:
    assert _stats("--db", str(demo_log), "--since", "1h")["totals"]["requests"] == 200  # the run ends now
    assert _stats("--db", str(demo_log), "--since", "2999-01-01")["totals"]["requests"] == 0
    result = CliRunner().invoke(cli, ["stats", "--db", str(demo_log), "--since", "yesterday-ish"])
    assert result.exit_code == 2 and "duration" in result.output


def test_tables_are_printed(demo_log: Path) -> None:
    result = CliRunner().invoke(cli, ["stats", "--db", str(demo_log), "--by", "tenant"], catch_exceptions=False)
    assert result.exit_code == 0
    for title in ("Overview", "By tenant", "Attempts by model", "Quotas (latest window)",
                  "Feedback by model and query type", "Events"):
        assert title in result.output
    assert "acme" in result.output


def test_missing_or_foreign_files_are_reported(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["stats", "--db", str(tmp_path / "nope.db")])
    assert result.exit_code == 1 and "no decision log" in result.output
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table t (x)")
    result = CliRunner().invoke(cli, ["stats", "--db", str(other)])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_db_comes_from_the_environment(scripted_log: tuple[Path, Policy]) -> None:
    result = CliRunner().invoke(cli, ["stats", "--json"], env={"ENGINE_LOG_DB": str(scripted_log[0])})
    assert result.exit_code == 0 and json.loads(result.output)["totals"]["requests"] == 8


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("90s", now=now) == now - 90
    assert parse_since("30m", now=now) == now - 1800
    assert parse_since("2h", now=now) == now - 7200
    assert parse_since("1d", now=now) == now - 86400
    assert parse_since("1w", now=now) == now - 7 * 86400
    assert parse_since("1700000000", now=now) == 1_700_000_000
    assert parse_since("1970-01-02", now=now) == 86400
    assert parse_since("1970-01-01T01:00:00+01:00", now=now) == 0
    assert parse_since(None) is None and parse_since(" ") is None
    with pytest.raises(ValueError, match="cannot read"):
        parse_since("soon")
