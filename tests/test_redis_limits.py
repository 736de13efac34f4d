"""Rate limits on Redis: exact sliding windows across routers, waits within the deadline, tenant/key limits."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import RateLimitExceeded
from engine.policy.api import load_policy_text
from engine.policy.model import Policy
from engine.runtime.backends import build_state
from engine.runtime.backends.redis_limits import RedisRateLimits
from engine.runtime.clock import SystemClock
from engine.runtime.limits import LimitWouldExceedDeadline
from engine.runtime.router import Router
from tests.redis_fixture import RedisServer
from tests.runtime.conftest import sims

POLICY = """
version: 1
providers:
  p: {{adapter: simulated, limits: {{rpm: {rpm}, tpm: {tpm}}}}}
models:
  m: {{provider: p, price: {{input: 1, output: 2}}, context_window: 8000}}
routes:
  - {{name: default}}
limits:
  - {{name: per-tenant, scope: [tenant], rpm: 5}}
  - {{name: per-key-tokens, scope: [key], tpm: 1000}}
state: {{backend: redis, url: "{url}", timeout_ms: 2000, on_failure: {{limits: {on_failure}}}}}
"""


def policy(url: str, rpm: int = 10, tpm: int = 100000, on_failure: str = "local") -> Policy:
    return load_policy_text(POLICY.format(url=url, rpm=rpm, tpm=tpm, on_failure=on_failure), "p.yaml", env={})


def limits_of(p: Policy, period_s: float = 60.0) -> RedisRateLimits:
    parts = build_state(p, clock=SystemClock(), quota_path=None, cache_path=None)
    assert isinstance(parts.limits, RedisRateLimits)
    if period_s != 60.0:
        return RedisRateLimits(p.providers, p.models, conn=parts.limits._conn, fallback_local=True,
                               period_s=period_s)
    return parts.limits


async def test_rpm_holds_exactly_across_routers(redis_server: RedisServer) -> None:
    p = policy(redis_server.url, rpm=10)
    routers = [limits_of(p) for _ in range(3)]
    loop = asyncio.get_running_loop()

    async def one(i: int) -> bool:
        try:
            await routers[i % 3].acquire("m", 10, deadline=loop.time() + 1.0)
        except LimitWouldExceedDeadline as e:
            assert e.limit == "provider p rpm" and e.wait_s > 1.0
            return False
        return True

    got = await asyncio.gather(*(one(i) for i in range(40)))
    assert sum(got) == 10  # a sliding window: never the limit per router, never twice it at a boundary
    # decide's view in each router that saw a refusal: the model is unavailable until the window frees
    blocked = [r.unavailable({"m": 10}, loop.time() + 1.0) for r in routers]
    # (a router whose Redis call timed out on a loaded machine has fallen back to its own view)
    assert any("m" in b for b in blocked) or not all(r._conn.available() for r in routers)
    for r in routers:
        await r._conn.aclose()


async def test_tokens_weigh_and_a_short_wait_is_taken(redis_server: RedisServer) -> None:
    p = policy(redis_server.url, rpm=1000, tpm=300)
    lim = limits_of(p, period_s=0.5)  # half-second windows: a wait that fits in the deadline
    loop = asyncio.get_running_loop()
    await lim.acquire("m", 200, deadline=loop.time() + 5)
    with pytest.raises(LimitWouldExceedDeadline) as e:
        await lim.acquire("m", 200, deadline=loop.time() + 0.05)  # 400 > 300 tokens, no time to wait
    assert e.value.limit == "provider p tpm"
    t0 = loop.time()
    await lim.acquire("m", 200, deadline=loop.time() + 5)  # waits for the first one to leave the window
    assert loop.time() - t0 > 0  # it did wait (how long is the machine's business)
    await lim._conn.aclose()


async def test_redis_down_falls_back_to_local_limiters_or_rejects() -> None:
    url = "redis://127.0.0.1:1/0"
    loop = asyncio.get_running_loop()
    local = limits_of(policy(url, rpm=2))
    for _ in range(2):
        (await local.acquire("m", 10, deadline=loop.time() + 0.1)).release()
    with pytest.raises(LimitWouldExceedDeadline):
        await local.acquire("m", 10, deadline=loop.time() + 0.1)  # the process's own 2 rpm
    strict = limits_of(policy(url, rpm=2, on_failure="reject"))
    with pytest.raises(LimitWouldExceedDeadline, match="shared limits unavailable"):
        await strict.acquire("m", 10, deadline=loop.time() + 0.1)
    assert strict.unavailable({"m": 10}, loop.time() + 1) == {
        "m": "rate limits cannot be checked: the shared state store is down"}


async def test_tenant_and_key_limits_refuse_before_any_model(redis_server: RedisServer) -> None:
    p = policy(redis_server.url, rpm=1000)
    routers = [Router(p, log_path=None, adapters=sims(p)) for _ in range(2)]
    try:
        served = refused = 0
        for i in range(8):
            try:
                await routers[i % 2].generate(f"r{i}", max_tokens=10, meta={"tenant": "acme"})
                served += 1
            except RateLimitExceeded as e:
                refused += 1
                assert e.limit == "per-tenant" and e.scope_key == "tenant=acme" and e.retry_after > 0
        assert (served, refused) == (5, 3)  # 5 rpm for the tenant over both routers
        # another tenant is not affected; a key's token budget is its own
        await routers[0].generate("other", max_tokens=10, meta={"tenant": "globex", "key": "k1"})
        with pytest.raises(RateLimitExceeded) as e:
            await routers[1].generate("big", max_tokens=990, meta={"tenant": "initech", "key": "k1"})
        assert e.value.limit == "per-key-tokens" and e.value.measure == "tpm"
    finally:
        for r in routers:
            await r.aclose()
