"""Rolling quota windows (`24h`, `7d`, `30d`) beside calendar ones, on the embedded and Redis ledgers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.errors import QuotaExceeded
from engine.policy.api import load_policy_text
from engine.policy.model import StateConfig
from engine.runtime.backends.redis_conn import RedisConn
from engine.runtime.backends.redis_quotas import RedisQuotaManager
from engine.runtime.clock import ManualClock
from engine.runtime.quotas import QuotaContext, QuotaManager
from engine.runtime.windows import rolling_span_s, step_of, window_bounds
from tests.redis_fixture import REDIS_SERVER, SKIP_REASON, RedisServer

POLICY = """
version: 1
providers:
  p: {adapter: simulated}
models:
  m: {provider: p, price: {input: 1, output: 2}, context_window: 8000}
routes:
  - {name: default}
quotas:
  - {name: rolling, scope: [tenant], window: 24h, limit: {requests: 3}}
"""
CTX = QuotaContext("acme", None, "m", "p")
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 3600) + 600  # ten minutes into an hour


def test_window_names() -> None:
    assert rolling_span_s("24h") == 86400 and rolling_span_s("7d") == 7 * 86400 and rolling_span_s("day") is None
    assert step_of("24h") == 3600 and step_of("30d") == 30 * 3600
    assert window_bounds("24h", T0) == (T0 - 600, T0 + 3000)
    with pytest.raises(ValueError, match="unknown quota window"):
        window_bounds("fortnight", T0)
    bad = load_policy_text  # the schema takes hours and days only
    with pytest.raises(Exception, match="window"):
        bad(POLICY.replace("window: 24h", "window: 3w"), "p.yaml", env={})


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[QuotaManager, ManualClock]]:
    quotas = load_policy_text(POLICY, "p.yaml", env={}).quotas
    clock = ManualClock(T0)
    if request.param == "redis":
        if REDIS_SERVER is None:
            pytest.skip(SKIP_REASON)
        server = RedisServer(tmp_path)
        server.start()
        conn = RedisConn(StateConfig(backend="redis", url=server.url, timeout_ms=2000))
        m: QuotaManager = RedisQuotaManager(quotas, conn=conn, clock=clock, reservation_ttl_s=600, fail_closed=True)
        yield m, clock
        await conn.aclose()
        server.stop()
    else:
        m = QuotaManager(quotas, path=tmp_path / "q.db" if request.param == "sqlite" else None, clock=clock)
        yield m, clock
        m.close()


async def take(m: QuotaManager, n: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            await m.aflush() if isinstance(m, RedisQuotaManager) else None
            r = await m.areserve(CTX, 10, 0.0)
            await m.asettle(r, 10, 0.0)
            ok += 1
        except QuotaExceeded:
            pass
    return ok


async def test_usage_leaves_the_window_a_step_at_a_time(ledger: tuple[QuotaManager, ManualClock]) -> None:
    m, clock = ledger
    assert await take(m, 2) == 2  # at T0
    clock.advance(5 * 3600)
    assert await take(m, 3) == 1  # three in the last 24 h, wherever the steps are
    with pytest.raises(QuotaExceeded) as e:
        await m.areserve(CTX, 10, 0.0)
    assert e.value.resets_at == T0 - 600 + 6 * 3600  # the next step boundary: room may appear there
    clock.advance(19 * 3600)  # T0 + 24 h: T0's step is still in the span (a step late, never early)
    assert await take(m, 1) == 0
    clock.advance(3600)  # T0's step has left: its two requests no longer count
    assert await take(m, 3) == 2
    clock.advance(25 * 3600)  # everything has left (24 h and a step)
    assert await take(m, 4) == 3
