"""`engine replay`: re-deciding logged requests under another policy, exactly or not at all."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.base import Price
from adapters.simulated import SimulatedAdapter
from engine.cli.app import cli
from engine.errors import RequestError
from engine.ops.demo import run_demo
from engine.ops.replay import replay
from engine.policy.api import load_policy, load_policy_text
from engine.policy.bundled import default_policy_path
from engine.policy.model import Policy
from engine.runtime.router import Router

HEAD = """
version: 1
providers:
  pa: {adapter: simulated}
  pb: {adapter: simulated}
models:
  cheap: {provider: pa, price: {input: 1, output: 2}, context_window: 8000, scores: {chat: 3, code: 3}}
  good: {provider: pb, price: {input: 10, output: 20}, context_window: 8000, scores: {chat: 5, code: 5}}
"""
SIGNALS = """
signals:
  code: {regex: ['```']}
"""
PII = """  pii: {regex: ['@']}
"""
QUERY_TYPES = """
query_types:
  - {type: code, when: "signals.code"}
  - {type: chat}
"""
CODE_ROUTE = """
routes:
  - name: code
    when: "query_type == 'code'"
    strategy: best
"""
DEFAULT_ROUTE = """
  - name: default
    strategy: cheapest
"""
BASE = HEAD + SIGNALS + QUERY_TYPES + CODE_ROUTE + DEFAULT_ROUTE

CHATS = ["hello there", "what is the capital of France?", "mail me at bob@example.com", "tell me a joke",
         "how do I boil an egg?", "reply to alice@example.com please"]
CODES = ["fix ```print(x```", "explain ```a = b```"]


def policy(text: str, name: str = "p.yaml") -> Policy:
    return load_policy_text(text, name, env={})


async def _run(base: Policy, db: Path) -> None:
    sims = {n: SimulatedAdapter(m.provider, m.id, price=Price(m.price.input, m.price.output), time_scale=0)
            for n, m in base.models.items()}
    router = Router(base, log_path=db, adapters=dict(sims))
    for prompt in CHATS + CODES:
        await router.generate(prompt, meta={"tenant": "t"}, max_tokens=200)
    with pytest.raises(RequestError):
        await router.generate("  ", meta={"tenant": "t"})
    await router.aclose()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two logs of the same traffic under BASE: prompts hashed, and prompts kept in full."""
    d = tmp_path_factory.mktemp("replay")
    out = {"hash": d / "hash.db", "full": d / "full.db"}
    asyncio.run(_run(policy(BASE), out["hash"]))
    asyncio.run(_run(policy(BASE + "log: {prompts: full}\n"), out["full"]))
    return out


def _rows(db: Path, where: str) -> list[tuple[int, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"select input_tokens, output_tokens from requests where {where}").fetchall()


def test_the_same_policy_changes_nothing(logs: dict[str, Path]) -> None:
    r = replay(logs["hash"], policy(BASE), baseline=policy(BASE))
    assert (r.rows, r.replayed, r.route_changed, r.model_changed, r.plan_changed) == (9, 8, 0, 0, 0)
    assert r.skipped == {"bad_request: rejected before routing, nothing to decide": 1}
    assert r.inexact == {} and r.newly_refused == {} and r.runtime_shaped == 0
    assert r.new_cost_usd == pytest.approx(r.old_cost_usd) and r.costed == 8


def test_a_strategy_change_moves_the_chats_and_their_cost(logs: dict[str, Path]) -> None:
    new = policy(BASE.replace("strategy: cheapest", "strategy: best"))
    r = replay(logs["hash"], new, baseline=policy(BASE))
    assert (r.replayed, r.route_changed, r.model_changed) == (8, 0, len(CHATS))
    chats = _rows(logs["hash"], "route = 'default'")
    codes = _rows(logs["hash"], "route = 'code'")
    old = sum(i * 1 + o * 2 for i, o in chats) / 1e6 + sum(i * 10 + o * 20 for i, o in codes) / 1e6
    after = sum(i * 10 + o * 20 for i, o in chats + codes) / 1e6
    assert r.old_cost_usd == pytest.approx(old) and r.new_cost_usd == pytest.approx(after)
    assert r.transitions[0]["old_model"] == "cheap" and r.transitions[0]["new_model"] == "good"
    assert r.transitions[0]["count"] == len(CHATS) and len(r.examples) == 1
    assert r.logged_cost_usd == pytest.approx(old)  # nothing failed: the estimate is what was paid


def test_a_new_text_signal_on_hashed_prompts_is_counted_not_guessed(logs: dict[str, Path]) -> None:
    new = policy(HEAD + SIGNALS + PII + QUERY_TYPES + CODE_ROUTE + """
  - name: private
    when: "signals.pii"
    candidates: [good]
    strategy: cheapest
""" + DEFAULT_ROUTE)
    r = replay(logs["hash"], new, baseline=policy(BASE))
    # code requests match before the new route whatever the signal; every chat depends on it
    assert r.replayed == len(CODES)
    assert sum(r.inexact.values()) == len(CHATS)
    (reason,) = r.inexact
    assert "'pii'" in reason and "hash" in reason and "log.prompts: full" in reason
    assert r.model_changed == 0


def test_with_full_prompts_the_new_signal_is_computed(logs: dict[str, Path]) -> None:
    new = policy(HEAD + SIGNALS + PII + QUERY_TYPES + CODE_ROUTE + """
  - name: private
    when: "signals.pii"
    candidates: [good]
    strategy: cheapest
""" + DEFAULT_ROUTE + "log: {prompts: full}\n")
    r = replay(logs["full"], new, baseline=policy(BASE + "log: {prompts: full}\n"))
    assert r.inexact == {} and r.replayed == len(CHATS) + len(CODES)
    with_at = sum("@" in c for c in CHATS)
    assert (r.route_changed, r.model_changed) == (with_at, with_at)
    assert {e["new_route"] for e in r.examples} == {"private"}


def test_an_unknown_signal_that_cannot_change_the_decision_is_exact(logs: dict[str, Path]) -> None:
    new = policy(HEAD + SIGNALS + PII + QUERY_TYPES + CODE_ROUTE + """
  - name: private
    when: "signals.pii and meta.tier == 'enterprise'"
    candidates: [good]
    strategy: cheapest
""" + DEFAULT_ROUTE)
    r = replay(logs["hash"], new, baseline=policy(BASE))
    assert r.inexact == {} and r.replayed == 8 and r.model_changed == 0


def test_quotas_are_replayed_in_log_order(logs: dict[str, Path]) -> None:
    new = policy(BASE + "quotas:\n  - {name: small, scope: [tenant], window: day, limit: {requests: 3}}\n")
    r = replay(logs["hash"], new, baseline=policy(BASE))
    assert r.newly_refused == {"quota": 8 - 3}
    refused = [e for e in r.examples if e["new_model"] is None]
    assert refused and "quota 'small'" in refused[0]["refusal"]
    # refused requests cost nothing under the new policy
    assert r.new_cost_usd < r.old_cost_usd


def test_a_cost_ceiling_refuses_with_no_model(logs: dict[str, Path]) -> None:
    new = policy(BASE.replace("strategy: cheapest", "strategy: cheapest\n    max_cost_usd: 0.0000001"))
    r = replay(logs["hash"], new, baseline=policy(BASE))
    assert r.newly_refused == {"no_model": len(CHATS)}


def test_without_a_baseline_the_logged_decisions_are_compared(logs: dict[str, Path]) -> None:
    r = replay(logs["hash"], policy(BASE.replace("strategy: cheapest", "strategy: best")))
    assert r.baseline is None and r.runtime_shaped is None
    assert r.model_changed == len(CHATS)


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    return asyncio.run(run_demo(load_policy(default_policy_path()), out, requests=200, time_scale=0)).db_path


def test_cli_finds_the_baseline_by_digest(demo_log: Path) -> None:
    result = CliRunner().invoke(cli, ["replay", "--db", str(demo_log), "--policy", str(default_policy_path()),
                                      "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["baseline"] == str(default_policy_path())
    assert (data["route_changed"], data["model_changed"], data["plan_changed"]) == (0, 0, 0)
    assert data["cost_delta_usd"] == pytest.approx(0.0)
    # the outage shaped some logged plans: that is runtime, not policy, and is reported apart
    assert data["runtime_shaped"] > 0


def test_cli_compares_with_the_log_when_no_baseline_matches(demo_log: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(default_policy_path().read_text() + "\n# a different file, so a different digest\n")
    result = CliRunner().invoke(cli, ["replay", "--db", str(demo_log), "--policy", str(other), "--json"],
                                env={"ENGINE_POLICY": str(other)}, catch_exceptions=False)
    data = json.loads(result.output)
    assert data["baseline"] is None and data["replayed"] > 0


def test_cli_pretty_output(demo_log: Path, tmp_path: Path) -> None:
    cheaper = tmp_path / "cheaper.yaml"
    text = default_policy_path().read_text()
    assert "limit: {cost_usd: 5.00}" in text
    cheaper.write_text(text.replace("limit: {cost_usd: 5.00}", "limit: {cost_usd: 1.00}"))
    result = CliRunner().invoke(cli, ["replay", "--db", str(demo_log), "--policy", str(cheaper)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Replay of 200 logged requests" in out and "default.yaml decided again" in out
    assert "would be refused (newly)" in out and "quota:" in out
    assert "estimated cost difference" in out and "Changes of first model" in out


def test_cli_rejects_an_invalid_policy(demo_log: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nroutes: []\n")
    result = CliRunner().invoke(cli, ["replay", "--db", str(demo_log), "--policy", str(bad)])
    assert result.exit_code == 1 and "bad.yaml" in result.output


def test_a_seeded_cache_hit_is_priced_by_whether_the_new_policy_caches_seeds(tmp_path: Path) -> None:
    """The log records the seed (m002), so replay knows a seeded hit depends on `cache.seeded`."""
    from tests.runtime.toolsim import tool_sims

    cached = BASE + "cache: {enabled: true, seeded: true}\n"
    db = tmp_path / "seeded.db"

    async def run() -> None:
        p = policy(cached)
        async with Router(p, log_path=db, adapters=tool_sims(p)) as router:  # models that take a seed
            for _ in range(2):
                await router.generate("hello there", seed=42, meta={"tenant": "t"}, max_tokens=200)

    asyncio.run(run())
    same = replay(db, policy(cached), baseline=policy(cached))
    assert same.costed == 2 and same.uncosted == {}
    unseeded = replay(db, policy(cached.replace("seeded: true", "seeded: false")), baseline=policy(cached))
    assert unseeded.costed == 1
    assert list(unseeded.uncosted.values()) == [1]
    assert "would not cache" in next(iter(unseeded.uncosted))
