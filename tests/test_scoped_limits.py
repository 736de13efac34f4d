"""Per-tenant / per-key `limits:` on the embedded backend: exact sliding windows, refusals that consume nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.errors import RateLimitExceeded, RoutingRefused
from engine.policy.model import ScopedLimit
from engine.runtime.clock import ManualClock
from engine.runtime.router import Router
from engine.runtime.scoped_limits import ScopedLimits
from tests.runtime.conftest import make_policy, sims


def limits(*entries: ScopedLimit) -> tuple[ScopedLimits, ManualClock]:
    clock = ManualClock()
    return ScopedLimits(entries, clock=clock), clock


async def test_rpm_is_a_sliding_window() -> None:
    lim, clock = limits(ScopedLimit(name="t", scope=("tenant",), rpm=3))
    for _ in range(3):
        await lim.admit("acme", None, 10)
        clock.advance(10)
    with pytest.raises(RateLimitExceeded) as e:
        await lim.admit("acme", None, 10)
    assert e.value.retry_after == pytest.approx(30.0)  # the first of the three leaves at t=60
    assert isinstance(e.value, RoutingRefused)
    clock.advance(30)
    await lim.admit("acme", None, 10)


async def test_tokens_weigh_and_refusals_consume_nothing() -> None:
    lim, clock = limits(ScopedLimit(name="k", scope=("key",), rpm=100, tpm=1000))
    await lim.admit(None, "k1", 700)
    with pytest.raises(RateLimitExceeded) as e:
        await lim.admit(None, "k1", 400)
    assert e.value.measure == "tpm"
    await lim.admit(None, "k1", 300)  # the refused 400 took nothing
    await lim.admit(None, "k2", 1000)  # each key has its own window
    await lim.admit(None, None, 5000)  # no key: this entry does not apply


async def test_both_scopes_count_per_pair() -> None:
    lim, _ = limits(ScopedLimit(name="tk", scope=("tenant", "key"), rpm=1))
    await lim.admit("a", "k", 1)
    await lim.admit("b", "k", 1)
    with pytest.raises(RateLimitExceeded, match="tenant=a,key=k"):
        await lim.admit("a", "k", 1)


async def test_router_refuses_and_logs(tmp_path: Path) -> None:
    policy = make_policy("limits:\n  - {name: per-tenant, scope: [tenant], rpm: 2}\n")
    db = tmp_path / "log.db"
    router = Router(policy, log_path=db, adapters=sims(policy))
    try:
        for _ in range(2):
            await router.generate("hi", max_tokens=10, meta={"tenant": "acme"})
        with pytest.raises(RateLimitExceeded):
            await router.generate("hi", max_tokens=10, meta={"tenant": "acme"})
    finally:
        await router.aclose()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT outcome, error_class, error_message FROM requests ORDER BY ts").fetchall()
    con.close()
    assert [r[0] for r in rows] == ["served", "served", "rate_limited"]
    assert rows[2][1] == "RateLimitExceeded" and "per-tenant" in rows[2][2]
