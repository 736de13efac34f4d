"""Conditional quotas (`when:` on a quota), through the router, on the embedded and Redis backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.errors import QuotaExceeded
from engine.policy.api import analyze_text, load_policy_text
from engine.runtime.router import Router
from tests.redis_fixture import REDIS_SERVER, SKIP_REASON, RedisServer
from tests.runtime.conftest import sims

POLICY = """
version: 1
providers:
  p: {{adapter: simulated}}
models:
  m: {{provider: p, price: {{input: 1, output: 2}}, context_window: 8000}}
signals:
  urgent: {{keywords: [urgent]}}
routes:
  - {{name: default}}
quotas:
  - name: free-tier-tokens
    scope: [key]
    window: day
    when: "meta.tier == 'free' and not signals.urgent"
    limit: {{requests: 2}}
{state}
"""


@pytest.fixture(params=["embedded", "redis"])
async def router(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Router]:
    state = ""
    server = None
    if request.param == "redis":
        if REDIS_SERVER is None:
            pytest.skip(SKIP_REASON)
        server = RedisServer(tmp_path)
        server.start()
        state = f'state: {{backend: redis, url: "{server.url}", timeout_ms: 2000}}'
    policy = load_policy_text(POLICY.format(state=state), "p.yaml", env={})
    r = Router(policy, log_path=None, adapters=sims(policy))
    yield r
    await r.aclose()
    if server is not None:
        server.stop()


async def served(router: Router, n: int, **meta: str) -> int:
    ok = 0
    for i in range(n):
        try:
            await router.generate(f"request {i}", max_tokens=100, meta=meta)
            ok += 1
        except QuotaExceeded as e:
            assert e.quota == "free-tier-tokens"
    return ok


async def test_only_matching_requests_count(router: Router) -> None:
    assert await served(router, 5, tier="free", key="k1") == 2  # two requests a day per free key
    assert await served(router, 5, tier="premium", key="k1") == 5  # the quota does not apply to them
    assert await served(router, 3, tier="free", key="k2") == 2  # per key
    # a signal in the condition: an urgent free request is not counted either
    r = await router.generate("urgent: the build is broken", max_tokens=100, meta={"tier": "free", "key": "k1"})
    assert r.model == "m"


def test_validate_checks_the_condition() -> None:
    bad = POLICY.format(state="").replace("signals.urgent", "signals.urgnt")
    codes = {d.code for d in analyze_text(bad).diagnostics}
    assert "expr" in codes


async def test_replay_applies_the_condition(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from engine.cli.app import cli

    free = POLICY.format(state="").replace("limit: {requests: 2}", "limit: {requests: 1}")
    unlimited = free.split("quotas:")[0]
    db = tmp_path / "log.db"
    policy = load_policy_text(unlimited, "p.yaml", env={})
    r = Router(policy, log_path=db, adapters=sims(policy))
    for tier in ("free", "free", "free", "premium", "premium"):
        await r.generate(f"a {tier} request", max_tokens=10, meta={"tier": tier, "key": "k"})
    await r.aclose()
    new = tmp_path / "new.yaml"
    new.write_text(free)
    result = CliRunner().invoke(cli, ["replay", "--db", str(db), "--policy", str(new), "--json"],
                                catch_exceptions=False)
    report = json.loads(result.output)
    assert sum(report["newly_refused"].values()) == 2  # the 2nd and 3rd free requests; premium is not counted
