"""Redis dies, hangs and comes back mid-run: the documented behaviour, no hung request, every request logged.

Documented (docs/operations.md, "Running several instances"): with `on_failure.quotas: reject`
a request that a quota applies to is refused with `StateUnavailable` (503 in the service);
with `local` it is counted in the process's own ledger; rate limits fall back to the
process's own limiters; the router uses Redis again once it answers, without a restart.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from engine.errors import StateUnavailable
from engine.policy.api import load_policy_text
from engine.runtime.router import Router
from tests.redis_fixture import RedisServer
from tests.runtime.conftest import sims

POLICY = """
version: 1
providers:
  p: {{adapter: simulated, limits: {{rpm: 1000}}}}
models:
  m: {{provider: p, price: {{input: 1, output: 2}}, context_window: 8000}}
routes:
  - {{name: default}}
quotas:
  - {{name: tenant-requests, scope: [tenant], window: day, limit: {{requests: 10000}}}}
deadline_s: 5
state:
  backend: redis
  url: "{url}"
  timeout_ms: 1500
  retry_s: 0.2
  on_failure: {{quotas: {quotas}, limits: local}}
"""


async def burst(router: Router, n: int, tag: str) -> tuple[dict[str, int], float]:
    """n concurrent requests; (outcome counts, slowest seconds)."""
    counts: dict[str, int] = {}
    slowest = 0.0

    async def one(i: int) -> None:
        nonlocal slowest
        t0 = time.monotonic()
        try:
            await router.generate(f"{tag} {i}", max_tokens=10, meta={"tenant": "t"})
            k = "ok"
        except StateUnavailable:
            k = "state_unavailable"
        counts[k] = counts.get(k, 0) + 1
        slowest = max(slowest, time.monotonic() - t0)

    await asyncio.gather(*(one(i) for i in range(n)))
    return counts, slowest


async def until_ok(router: Router, tally: dict[str, int], seconds: float = 20.0) -> bool:
    """Send requests until one is served with Redis up again (the reconnection); outcomes go to `tally`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        counts, _ = await burst(router, 1, "probe")
        for k, v in counts.items():
            tally[k] = tally.get(k, 0) + v
        if counts.get("ok") and router.backend.conn.up:
            return True
        await asyncio.sleep(0.05)
    return False


def log_count(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    finally:
        con.close()


@pytest.mark.parametrize("quotas", ["reject", "local"])
async def test_redis_killed_and_restarted_mid_run(redis_server: RedisServer, tmp_path: Path, quotas: str) -> None:
    policy = load_policy_text(POLICY.format(url=redis_server.url, quotas=quotas), "p.yaml", env={})
    db = tmp_path / "log.db"
    router = Router(policy, log_path=db, adapters=sims(policy))
    probes: dict[str, int] = {}
    try:
        before, _ = await burst(router, 30, "before")
        assert before == {"ok": 30}

        redis_server.stop()  # SIGKILL: connections reset mid-pool
        during, slowest = await burst(router, 30, "during")
        if quotas == "reject":
            assert during == {"state_unavailable": 30}  # fail closed, explicitly
        else:
            assert during == {"ok": 30}  # counted in this process meanwhile
        assert slowest < policy.deadline_s  # refused fast, never hung
        status = router.backend.status()
        assert status["connected"] is False and status["errors"] >= 1 and status["last_error"]

        redis_server.start()  # same port, empty (no persistence in this test)
        assert await until_ok(router, probes)  # no restart of the router
        after, _ = await burst(router, 30, "after")
        assert after == {"ok": 30}
        assert router.backend.status()["reconnects"] >= 1
    finally:
        await router.aclose()
    # every request, refused or served, has its row: nothing was lost while Redis was away
    sent = 90 + sum(probes.values())
    assert log_count(db) == sent
    con = sqlite3.connect(db)
    by_outcome = dict(con.execute("SELECT outcome, COUNT(*) FROM requests GROUP BY outcome").fetchall())
    con.close()
    refused = during.get("state_unavailable", 0) + probes.get("state_unavailable", 0)
    assert by_outcome.get("refused_quota", 0) == refused  # logged as refused by quota, with its reason
    assert by_outcome.get("served", 0) == sent - refused


async def test_hung_redis_costs_a_timeout_not_a_hang(redis_server: RedisServer, tmp_path: Path) -> None:
    policy = load_policy_text(POLICY.format(url=redis_server.url, quotas="reject"), "p.yaml", env={})
    router = Router(policy, log_path=tmp_path / "log.db", adapters=sims(policy))
    try:
        ok, _ = await burst(router, 5, "warm")
        assert ok == {"ok": 5}
        assert redis_server.proc is not None
        redis_server.proc.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            during, slowest = await burst(router, 20, "hung")
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        assert during == {"state_unavailable": 20}
        assert slowest < policy.deadline_s
        assert "Timeout" in str(router.backend.status()["last_error"])
        probes: dict[str, int] = {}
        assert await until_ok(router, probes)
    finally:
        await router.aclose()
    assert log_count(tmp_path / "log.db") == 25 + sum(probes.values())
