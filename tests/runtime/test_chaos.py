"""Chaos: many concurrent requests over providers failing at random (DESIGN.md, testing)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from adapters.base import Price
from adapters.simulated import SimulatedAdapter
from engine.errors import AllModelsFailed, QuotaExceeded, RoutingRefused
from engine.runtime.router import Router
from tests.runtime.conftest import POLICY, make_policy

CHAOS = POLICY.replace("health: {min_requests: 1000}",
                       "health: {min_requests: 20, window_s: 60, open_circuit: {error_rate: 0.6, cooldown_s: 0.05}}")
CHAOS += """
quotas:
  - name: tenant-requests
    scope: [tenant]
    window: day
    limit: {requests: 350}
"""


async def test_2000_requests_at_concurrency_64(tmp_path: Path) -> None:
    policy = make_policy(base=CHAOS)
    adapters = {
        name: SimulatedAdapter(m.provider, m.id, price=Price(m.price.input, m.price.output), latency_ms=(2, 20),
                               time_scale=0.05, failure_rate=rate, seed=i,
                               faults=["server_error", "timeout", "rate_limited", "overloaded"])
        for i, ((name, m), rate) in enumerate(zip(policy.models.items(), [0.7, 0.6, 0.5, 0.4], strict=True))
    }
    router = Router(policy, log_path=tmp_path / "chaos.db", adapters=adapters)
    rng = random.Random(7)
    sem = asyncio.Semaphore(64)
    outcomes: dict[str, int] = {}
    spent = 0.0

    async def one(i: int) -> None:
        nonlocal spent
        async with sem:
            tenant = f"t{rng.randrange(5)}"
            try:
                r = await router.generate(f"question {i % 700}: {'x ' * rng.randrange(1, 50)}",
                                          max_tokens=rng.choice([50, 200]), meta={"tenant": tenant})
                spent += r.cost_usd
                key = "ok"
            except AllModelsFailed as e:
                assert e.attempts, "an explicit error lists its attempts"
                key = "all_failed"
            except QuotaExceeded as e:
                assert e.quota == "tenant-requests"
                key = "quota"
            except RoutingRefused:
                key = "refused"
            outcomes[key] = outcomes.get(key, 0) + 1

    await asyncio.gather(*(one(i) for i in range(2000)))
    await router.aclose()
    assert sum(outcomes.values()) == 2000
    assert outcomes["ok"] > 1000 and outcomes.get("quota", 0) > 0 and outcomes.get("all_failed", 0) > 0, outcomes

    db = sqlite3.connect(tmp_path / "chaos.db")
    (rows, distinct), = db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM requests").fetchall()
    assert rows == distinct == 2000
    (ok_rows,), = db.execute("SELECT COUNT(*) FROM requests WHERE outcome IN ('served', 'cached')").fetchall()
    assert ok_rows == outcomes["ok"]
    (logged_cost,), = db.execute("SELECT SUM(cost_usd) FROM requests").fetchall()
    (attempt_cost,), = db.execute("SELECT SUM(cost_usd) FROM attempts").fetchall()
    assert abs(logged_cost - spent) < 1e-9
    assert abs(attempt_cost - logged_cost) < 1e-9
    # no tenant went over its quota of served requests
    served = "SELECT tenant, COUNT(*) FROM requests WHERE outcome IN ('served', 'cached') GROUP BY tenant"
    for tenant, n in db.execute(served):
        assert n <= 350, tenant
