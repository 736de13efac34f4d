"""`engine demo`: a real run over simulated providers, its story in the log, and an honest summary."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.app import cli
from engine.ops.demo import VirtualClock, _timeline_start, demo_policy
from engine.ops.workload import BURST, OUTAGE, Phases, build_workload
from engine.policy.api import load_policy, load_policy_text

N = 200


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "engine-demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--requests", str(N), "--time-scale", "0"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def _one(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0] or 0)


def test_demo_writes_the_log_and_the_report(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    db = out / "decisions.db"
    assert db.is_file() and (out / "report.html").is_file()
    assert _one(db, "select count(*) from requests") == N
    assert f"Decision log: {db}" in " ".join(output.split())
    assert "report.html" in output


def test_demo_summary_numbers_come_from_the_log(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    db = out / "decisions.db"
    text = " ".join(output.split())
    hits = _one(db, "select sum(cache_hit) from requests")
    assert f"Cache: {hits:,} hits" in text
    refused = _one(db, "select count(*) from requests where outcome = 'refused_quota' and tenant = 'acme'")
    assert f"Quota: tenant acme refused {refused:,} times by tenant-daily-spend" in text
    # the per-model table shows each serving model with its request count
    with sqlite3.connect(db) as conn:
        per_model = conn.execute("select model, count(*) from requests where model is not null group by model")
        for model, n in per_model:
            assert re.search(rf"{re.escape(model)}\s*[│|]\s*{n:,}\s*[│|]", output), (model, n)


def test_demo_log_tells_the_whole_story(demo_run: tuple[Path, str]) -> None:
    db = demo_run[0] / "decisions.db"
    with sqlite3.connect(db) as conn:
        kinds = {k for (k,) in conn.execute("select kind from events")}
        assert {"demo_outage_started", "demo_outage_ended", "demo_burst_started", "demo_burst_ended"} <= kinds
        # the outage: the failing provider's calls failed with server-side errors, and requests fell back
        failed = conn.execute("select count(*) from attempts where error_class in ('ServerError', 'Overloaded') "
                              "and provider = 'sim-openai'").fetchone()[0]
        assert failed >= 10
        assert conn.execute("select count(*) from requests where fallbacks > 0").fetchone()[0] > 0
        # a tenant ran out of quota, repeated questions hit the cache, graders sent feedback
        assert conn.execute("select count(*) from requests where outcome = 'refused_quota'").fetchone()[0] > 0
        assert conn.execute("select count(*) from requests where cache_hit = 1").fetchone()[0] > 0
        assert conn.execute("select count(*) from feedback").fetchone()[0] > 0
        tenants = {t for (t,) in conn.execute("select distinct tenant from requests")}
        assert {"acme", "globex", "initech", "umbrella", "hooli"} <= tenants
        routes = {r for (r,) in conn.execute("select distinct route from requests where route is not null")}
        assert {"long-context", "premium-code", "default"} <= routes
        qts = {q for (q,) in conn.execute("select distinct query_type from requests where query_type is not null")}
        assert {"code", "math", "chat", "summarize"} <= qts
        assert conn.execute("select count(*) from requests where stream = 1").fetchone()[0] > 0
        # tool calls and structured output are part of the traffic, and of the log
        calls = conn.execute("select count(*), sum(tool_calls) from requests where finish_reason = 'tool_calls'")
        n_calls, n_made = calls.fetchone()
        assert n_calls > 0 and n_made >= n_calls
        assert conn.execute("select count(*) from requests where output_format = 'json_schema' "
                            "and outcome = 'served'").fetchone()[0] > 0
        # none went to the text-only model
        assert conn.execute("select count(*) from requests where tools_offered > 0 and model = 'mixtral'"
                            ).fetchone()[0] == 0


def test_demo_refuses_a_policy_that_would_call_a_vendor(tmp_path: Path) -> None:
    policy = tmp_path / "real.yaml"
    policy.write_text(
        "version: 1\nproviders:\n  openai: {adapter: openai, api_key: sk-test}\nmodels:\n"
        "  m: {provider: openai, price: {input: 1, output: 1}, context_window: 8000, scores: {chat: 4}}\n"
        "routes:\n  - name: default\n    strategy: cheapest\n")
    result = CliRunner().invoke(cli, ["demo", "--policy", str(policy), "--out", str(tmp_path / "o"),
                                      "--requests", "20", "--time-scale", "0"])
    assert result.exit_code == 1
    assert "simulated providers only" in result.output and "openai" in result.output
    assert not (tmp_path / "o" / "decisions.db").exists()


def test_workload_is_deterministic_and_mixed() -> None:
    a, b = build_workload(400, seed=3), build_workload(400, seed=3)
    assert a == b
    assert build_workload(400, seed=4) != a
    assert [r.index for r in a] == list(range(400))
    assert all(x.at_s < y.at_s for x, y in zip(a, a[1:], strict=False))
    kinds = {r.kind for r in a}
    assert {"chat", "code", "math", "summarize", "faq", "review", "burst", "stream"} <= kinds
    phases = Phases(400)
    assert phases.outage == range(int(400 * OUTAGE[0]), int(400 * OUTAGE[1]))
    assert all(a[i].kind == "burst" for i in phases.burst)
    assert sum(r.kind == "review" for r in a) == 30  # enough to exhaust the daily budget at any size
    review = next(r for r in a if r.kind == "review")
    assert review.meta == {"tenant": "acme", "tier": "premium"} and len(review.prompt()) > 150_000
    # the burst arrives ten times faster than everyday traffic
    burst = [a[i].at_s for i in phases.burst]
    everyday = [r.at_s for r in a[: phases.outage.start]]
    assert (burst[-1] - burst[0]) / len(burst) < (everyday[-1] - everyday[0]) / len(everyday) / 3
    assert BURST[0] > OUTAGE[1]


def test_workload_needs_a_minimum_size() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        build_workload(5)


def test_virtual_clock_only_moves_forward() -> None:
    clock = VirtualClock(1_000.0)
    clock.set(10.0)
    clock.set(5.0)
    assert clock.time() == 1_010.0
    before = clock.monotonic()
    clock.set(12.5)
    assert clock.monotonic() - before == 2.5


def test_timeline_ends_now_but_never_straddles_midnight() -> None:
    noon = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp()
    assert _timeline_start(600.0, noon) == noon - 601.0
    just_after_midnight = dt.datetime(2025, 6, 1, 0, 5, tzinfo=dt.timezone.utc).timestamp()
    start = _timeline_start(1200.0, just_after_midnight)
    midnight = just_after_midnight - 300
    assert start + 1200.0 < midnight  # the whole run fits in the previous day


def test_demo_policy_scales_latency_and_backoff_only_for_simulated_providers() -> None:
    policy = load_policy_text(
        "version: 1\nproviders:\n  s: {adapter: simulated, latency_ms: {p50: 100, p95: 200}}\nmodels:\n"
        "  m: {provider: s, price: {input: 1, output: 1}, context_window: 8000, scores: {chat: 4}}\n"
        "routes:\n  - name: default\n    strategy: cheapest\nretry: {max_attempts: 2, backoff_ms: 200, "
        "max_backoff_ms: 1000}\n", "p.yaml", env={})
    fast = demo_policy(policy, 0.1)
    assert fast.providers["s"].options["time_scale"] == 0.1
    assert fast.providers["s"].options["latency_ms"] == policy.providers["s"].options["latency_ms"]
    assert (fast.retry.backoff_ms, fast.retry.max_backoff_ms) == pytest.approx((20.0, 100.0))
    assert fast.digest == policy.digest  # the log still names the policy file that was run


def test_bundled_policy_is_all_simulated() -> None:
    from engine.policy.bundled import default_policy_path

    policy = load_policy(default_policy_path())
    assert demo_policy(policy, 0).providers.keys() == policy.providers.keys()
