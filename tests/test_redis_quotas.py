"""Quotas on Redis: the embedded semantics and messages, atomic reservations, leases that expire."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import QuotaExceeded, StateUnavailable
from engine.policy.model import Quota, QuotaLimit, StateConfig
from engine.runtime.backends.redis_conn import RedisConn, redacted_url
from engine.runtime.backends.redis_quotas import RedisQuotaManager
from engine.runtime.clock import SystemClock
from engine.runtime.quotas import QuotaContext, QuotaManager
from tests.redis_fixture import RedisServer

CTX = QuotaContext("acme", None, "m", "p")


def quota(name: str = "q", **limit: float) -> Quota:
    return Quota(name=name, scope=("tenant",), window="day", limit=QuotaLimit(**limit))  # type: ignore[arg-type]


def manager(url: str, quotas: list[Quota], *, ttl: float = 60.0, fail_closed: bool = True) -> RedisQuotaManager:
    conn = RedisConn(StateConfig(backend="redis", url=url, timeout_ms=2000, retry_s=0.2))
    return RedisQuotaManager(quotas, conn=conn, clock=SystemClock(), reservation_ttl_s=ttl, fail_closed=fail_closed)


async def test_same_refusal_as_the_embedded_ledger(redis_server: RedisServer) -> None:
    qs = [quota(requests=2, tokens=1000)]
    redis, local = manager(redis_server.url, qs), QuotaManager(qs, path=None, clock=SystemClock())
    for m in (redis, local):
        await m.areserve(CTX, 100, 0.0)
        await m.areserve(CTX, 100, 0.0)
    with pytest.raises(QuotaExceeded) as got_redis:
        await redis.areserve(CTX, 100, 0.0)
    with pytest.raises(QuotaExceeded) as got_local:
        await local.areserve(CTX, 100, 0.0)
    assert str(got_redis.value) == str(got_local.value)
    assert got_redis.value.measure == "requests" and got_redis.value.used == 2
    await redis._conn.aclose()


async def test_concurrent_reservations_never_pass_the_limit(redis_server: RedisServer) -> None:
    qs = [quota(requests=1000, cost_usd=0.01)]
    managers = [manager(redis_server.url, qs) for _ in range(4)]  # four routers' worth of connections

    async def one(m: RedisQuotaManager) -> bool:
        try:
            r = await m.areserve(CTX, 10, 0.0003)
        except QuotaExceeded:
            return False
        await m.asettle(r, 10, 0.0003)
        return True

    admitted = await asyncio.gather(*(one(managers[i % 4]) for i in range(200)))
    for m in managers:
        await m.aflush()
    assert sum(admitted) == 33  # floor(0.01 / 0.0003): exact, no float drift, no race
    left = await managers[0].aremaining("q", CTX)
    assert left["cost_usd"] == pytest.approx(0.01 - 33 * 0.0003)
    for m in managers:
        await m._conn.aclose()


async def test_settle_replaces_the_estimate_and_release_gives_all_back(redis_server: RedisServer) -> None:
    m = manager(redis_server.url, [quota(tokens=1000, requests=10)])
    r1 = await m.areserve(CTX, 600, 0.0)
    with pytest.raises(QuotaExceeded):
        await m.areserve(CTX, 600, 0.0)  # 600 + 600 > 1000 while the estimate is held
    await m.asettle(r1, 50, 0.0)  # the actual usage was small
    await m.aflush()  # settlements run after the answer; wait for this one
    r2 = await m.areserve(CTX, 600, 0.0)
    await m.arelease(r2)
    left = await m.aremaining("q", CTX)
    assert left["tokens"] == 950 and left["requests"] == 9
    await m._conn.aclose()


async def test_an_unsettled_reservation_expires(redis_server: RedisServer) -> None:
    m = manager(redis_server.url, [quota(tokens=1000, requests=10)], ttl=0.2)
    await m.areserve(CTX, 900, 0.0)  # its process "dies": never settled
    with pytest.raises(QuotaExceeded):
        await m.areserve(CTX, 900, 0.0)
    await asyncio.sleep(0.3)
    r = await m.areserve(CTX, 900, 0.0)  # the lease ran out: its tokens came back
    left = await m.aremaining("q", CTX)
    assert left["tokens"] == 100 and left["requests"] == 8  # the dead one's request stays counted
    await m.asettle(r, 100, 0.0)
    with pytest.raises(ValueError, match="already settled"):
        await m.asettle(r, 100, 0.0)
    await m.aflush()
    await m._conn.aclose()


async def test_late_settle_after_expiry_counts_the_actual_usage(redis_server: RedisServer) -> None:
    m = manager(redis_server.url, [quota(tokens=1000)], ttl=0.2)
    r = await m.areserve(CTX, 900, 0.0)
    await asyncio.sleep(0.3)
    await m.asettle(r, 300, 0.0)  # a very slow request: its estimate expired, its real usage counts
    await m.aflush()
    assert (await m.aremaining("q", CTX))["tokens"] == 700
    await m._conn.aclose()


async def test_redis_down_fails_closed_or_counts_locally(tmp_path: object) -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1
    closed = manager(url, [quota(requests=1)])
    with pytest.raises(StateUnavailable) as got:
        await closed.areserve(CTX, 10, 0.0)
    assert "s3cret" not in str(got.value) and "state_unavailable" not in str(got.value)
    assert "fails closed" in str(got.value)
    status = closed._conn.status()
    assert status["connected"] is False and "s3cret" not in repr(status)
    assert redacted_url(url) == "redis://127.0.0.1:1/0"
    local = manager(url, [quota(requests=1)], fail_closed=False)
    r = await local.areserve(CTX, 10, 0.0)
    with pytest.raises(QuotaExceeded):
        await local.areserve(CTX, 10, 0.0)  # the process's own ledger holds meanwhile
    await local.asettle(r, 5, 0.0)
