"""The response cache on Redis: entries shared by routers, tenant scope, TTL, single flight across routers."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.policy.model import CacheConfig, StateConfig
from engine.runtime.backends.redis_cache import RedisResponseCache
from engine.runtime.backends.redis_conn import RedisConn
from engine.runtime.clock import SystemClock
from tests.redis_fixture import RedisServer


def cache(url: str, *, ttl_s: float = 60, lock_s: float = 5, scope: str = "tenant") -> RedisResponseCache:
    conn = RedisConn(StateConfig(backend="redis", url=url, timeout_ms=2000, retry_s=0.2))
    return RedisResponseCache(CacheConfig(enabled=True, ttl_s=ttl_s, scope=scope),  # type: ignore[arg-type]
                              clock=SystemClock(), conn=conn, lock_s=lock_s)


def key(c: RedisResponseCache, tenant: str, text: str = "hello") -> str:
    return c.make_key(scope=tenant, target="default", messages=[("user", text)], params={"max_tokens": 10})


class Upstream:
    """Counts calls; each answer can be held until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> tuple[dict[str, Any], float]:
        self.calls += 1
        await self.gate.wait()
        return {"text": f"answer {self.calls}"}, 0.01


async def test_an_entry_stored_by_one_router_serves_another_within_its_tenant(redis_server: RedisServer) -> None:
    a, b = cache(redis_server.url), cache(redis_server.url)
    up = Upstream()
    value, hit = await a.get_or_compute(key(a, "acme"), up)
    assert not hit and value == {"text": "answer 1"}
    value, hit = await b.get_or_compute(key(b, "acme"), up)
    assert hit and value == {"text": "answer 1"} and up.calls == 1
    assert b.saved_cost_usd == 0.01
    _, hit = await b.get_or_compute(key(b, "globex"), up)  # another tenant: its own entry
    assert not hit and up.calls == 2
    for c in (a, b):
        await c._conn.aclose()


async def test_entries_expire_with_their_ttl(redis_server: RedisServer) -> None:
    c = cache(redis_server.url, ttl_s=0.2)
    up = Upstream()
    await c.get_or_compute(key(c, "t"), up)
    await asyncio.sleep(0.3)
    _, hit = await c.get_or_compute(key(c, "t"), up)
    assert not hit and up.calls == 2
    await c._conn.aclose()


async def test_identical_misses_on_three_routers_make_one_call(redis_server: RedisServer) -> None:
    routers = [cache(redis_server.url) for _ in range(3)]
    up = Upstream()
    up.gate.clear()
    tasks = [asyncio.create_task(r.get_or_compute(key(r, "t"), up)) for r in routers for _ in range(4)]
    while up.calls == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # everybody is waiting on the one leader now
    up.gate.set()
    results = await asyncio.gather(*tasks)
    assert up.calls == 1
    assert [hit for _, hit in results].count(False) == 1
    assert {v["text"] for v, _ in results} == {"answer 1"}
    for r in routers:
        await r._conn.aclose()


async def test_a_dead_leader_releases_its_followers_within_the_lock(redis_server: RedisServer) -> None:
    leader, follower = cache(redis_server.url, lock_s=0.3), cache(redis_server.url, lock_s=0.3)
    hung = Upstream()
    hung.gate.clear()  # the leader never answers: its process is as good as dead
    dead = asyncio.create_task(leader.get_or_compute(key(leader, "t"), hung))
    while hung.calls == 0:
        await asyncio.sleep(0.01)
    up = Upstream()
    value, hit = await asyncio.wait_for(follower.get_or_compute(key(follower, "t"), up), 10)
    assert not hit and up.calls == 1 and value == {"text": "answer 1"}  # took over once the lock expired
    dead.cancel()
    for c in (leader, follower):
        await c._conn.aclose()


async def test_redis_down_means_misses_not_failures() -> None:
    c = cache("redis://127.0.0.1:1/0")
    up = Upstream()
    for _ in range(2):
        value, hit = await c.get_or_compute(key(c, "t"), up)
        assert not hit and value["text"].startswith("answer")
    assert up.calls == 2 and c.store_errors >= 2
