"""Per-provider and per-model limits in one quota (`limit.by_provider` / `by_model`), on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.errors import QuotaExceeded
from engine.policy.api import load_policy_text
from engine.policy.model import Quota, StateConfig
from engine.runtime.backends.redis_conn import RedisConn
from engine.runtime.backends.redis_quotas import RedisQuotaManager
from engine.runtime.clock import SystemClock
from engine.runtime.quotas import QuotaContext, QuotaManager
from tests.redis_fixture import REDIS_SERVER, SKIP_REASON, RedisServer

POLICY = """
version: 1
providers:
  openai: {adapter: simulated}
  anthropic: {adapter: simulated}
  google: {adapter: simulated}
models:
  gpt: {provider: openai, price: {input: 1, output: 2}, context_window: 8000}
  gpt-mini: {provider: openai, price: {input: 1, output: 2}, context_window: 8000}
  claude: {provider: anthropic, price: {input: 1, output: 2}, context_window: 8000}
  gemini: {provider: google, price: {input: 1, output: 2}, context_window: 8000}
routes:
  - {name: default}
quotas:
  - name: per-vendor
    scope: [tenant]
    window: day
    limit: {requests: 1, by_provider: {openai: {requests: 3}, anthropic: {requests: 2}}}
  - name: per-model
    window: day
    limit: {by_model: {gpt-mini: {tokens: 250}}}
"""


def quotas() -> tuple[Quota, ...]:
    return load_policy_text(POLICY, "p.yaml", env={}).quotas


def ctx(model: str, provider: str, tenant: str = "acme") -> QuotaContext:
    return QuotaContext(tenant, None, model, provider)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def manager(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QuotaManager]:
    if request.param == "redis":
        if REDIS_SERVER is None:
            pytest.skip(SKIP_REASON)
        server = RedisServer(tmp_path)
        server.start()
        conn = RedisConn(StateConfig(backend="redis", url=server.url, timeout_ms=2000))
        m: QuotaManager = RedisQuotaManager(quotas(), conn=conn, clock=SystemClock(), reservation_ttl_s=60,
                                            fail_closed=True)
        yield m
        await conn.aclose()
        server.stop()
    else:
        path = tmp_path / "q.db" if request.param == "sqlite" else None
        m = QuotaManager(quotas(), path=path, clock=SystemClock())
        yield m
        m.close()


async def admitted(m: QuotaManager, c: QuotaContext, n: int, tokens: int = 10) -> int:
    ok = 0
    for _ in range(n):
        try:
            await m.areserve(c, tokens, 0.0)
            ok += 1
        except QuotaExceeded as e:
            assert e.quota in ("per-vendor", "per-model")
    return ok


async def test_each_provider_has_its_own_limit(manager: QuotaManager) -> None:
    assert await admitted(manager, ctx("gpt", "openai"), 5) == 3
    assert await admitted(manager, ctx("claude", "anthropic"), 5) == 2
    assert await admitted(manager, ctx("gemini", "google"), 5) == 1  # not in the map: the plain limit
    assert await admitted(manager, ctx("gpt", "openai", tenant="globex"), 5) == 3  # per tenant too


async def test_a_model_map_counts_only_its_models(manager: QuotaManager) -> None:
    assert await admitted(manager, ctx("gpt-mini", "openai"), 4, tokens=100) == 2  # 250 tokens: two of 100
    # gpt is not in the model map and the map has no plain limit: only the provider entry counts it
    assert await admitted(manager, ctx("gpt", "openai", tenant="t2"), 3, tokens=100) == 3


async def test_refusal_names_the_entry(manager: QuotaManager) -> None:
    await admitted(manager, ctx("claude", "anthropic"), 2)
    with pytest.raises(QuotaExceeded) as e:
        await manager.areserve(ctx("claude", "anthropic"), 10, 0.0)
    assert e.value.scope_key == "tenant=acme,provider=anthropic" and e.value.limit == 2


def test_validate_names_unknown_map_entries() -> None:
    from engine.policy.api import analyze_text

    a = analyze_text(POLICY.replace("anthropic: {requests: 2}", "anthropik: {requests: 2}"))
    codes = {d.code for d in a.diagnostics}
    assert "quota-unknown-provider" in codes
