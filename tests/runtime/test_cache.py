"""Cache effectiveness through the router: hits, tenant scoping, single flight, `when`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.runtime.router import Router
from tests.runtime.conftest import RowsFn, make_policy, sims

CACHED = """
cache: {enabled: true, ttl_s: 60, max_entries: 100, scope: tenant, when: "temperature == 0", normalize: [whitespace]}
"""


async def test_repeated_workload_hits_the_cache(tmp_path: Path, rows: RowsFn) -> None:
    p = make_policy(CACHED)
    ads = sims(p)
    router = Router(p, log_path=tmp_path / "log.db", adapters=ads)
    questions = [f"question number {i}" for i in range(10)]
    for _ in range(5):
        for q in questions:
            await router.generate(q, temperature=0, meta={"tenant": "acme"})
    assert ads["a-small"].calls == 10  # one upstream call per distinct question
    assert router.cache is not None and router.cache.hit_rate == 0.8
    hit = await router.generate("question   number 3 ", temperature=0, meta={"tenant": "acme"})
    assert hit.cached and hit.cost_usd == 0 and hit.attempts == 0
    await router.aclose()
    logged = rows("requests")
    assert sum(r["cache_hit"] for r in logged) == 41
    assert sum(r["saved_cost_usd"] for r in logged) > 0


async def test_tenants_never_share_entries_and_when_is_honoured() -> None:
    p = make_policy(CACHED)
    ads = sims(p)
    router = Router(p, log_path=None, adapters=ads)
    await router.generate("same question", temperature=0, meta={"tenant": "a"})
    r = await router.generate("same question", temperature=0, meta={"tenant": "b"})
    assert not r.cached
    r = await router.generate("same question", temperature=0.7, meta={"tenant": "a"})
    assert not r.cached  # cache.when requires temperature == 0
    assert ads["a-small"].calls == 3
    await router.aclose()


async def test_identical_concurrent_requests_share_one_upstream_call() -> None:
    p = make_policy(CACHED)
    ads = sims(p)
    for a in ads.values():
        a.time_scale, a.latency_ms = 1.0, (50.0, 50.0)
        a._mu, a._sigma = __import__("math").log(50.0), 0.0  # a fixed 50 ms upstream
    router = Router(p, log_path=None, adapters=ads)
    results = await asyncio.gather(*(router.generate("burst", temperature=0, meta={"tenant": "a"})
                                     for _ in range(20)))
    assert ads["a-small"].calls == 1
    assert sum(r.cached for r in results) == 19
    await router.aclose()


async def test_a_hit_needs_no_decision_and_is_logged_without_a_plan(tmp_path: Path, rows: RowsFn) -> None:
    from engine.errors import RoutingRefused
    from tests.runtime.conftest import POLICY

    p = make_policy(CACHED, base=POLICY.replace("health: {min_requests: 1000}",
                                                "health: {min_requests: 1, open_circuit: {cooldown_s: 600}}"))
    ads = sims(p)
    router = Router(p, log_path=tmp_path / "log.db", adapters=ads)
    await router.generate("warm me up", temperature=0)
    # every circuit open: a decision leaves no model, but a hit calls none
    for name in p.models:
        router.health.record(name, ok=False, latency_ms=1.0, error_class="ServerError")
        assert router.health.state(name) == "open"
    with pytest.raises(RoutingRefused):
        await router.generate("not cached yet", temperature=0)
    hit = await router.generate("warm me up", temperature=0)
    assert hit.cached and hit.route == "default" and hit.query_type == "chat"
    await router.aclose()
    first, _, second = rows("requests")
    assert first["plan"] == '["a-small","b-mid","b-mid2","c-big"]'
    assert (second["cache_hit"], second["plan"], second["route"], second["model"]) == (1, "[]", "default", "a-small")
    assert len(rows("attempts")) == 1


async def test_a_pinned_model_never_gets_another_models_cached_answer() -> None:
    p = make_policy(CACHED)
    ads = sims(p)
    async with Router(p, log_path=None, adapters=ads) as router:
        auto = await router.generate("pin me", temperature=0)
        pinned = await router.generate("pin me", temperature=0, model="c-big")
        pinned_again = await router.generate("pin me", temperature=0, model="c-big")
        by_route = await router.generate("pin me", temperature=0, model="default")
    assert (auto.model, auto.cached) == ("a-small", False)
    assert (pinned.model, pinned.cached) == ("c-big", False)
    assert (pinned_again.model, pinned_again.cached, pinned_again.route) == ("c-big", True, pinned.route)
    assert (by_route.model, by_route.cached) == ("a-small", True)  # the route is what `auto` was keyed by


async def test_seeded_requests_are_cached_only_when_the_policy_says_so() -> None:
    from tests.runtime.toolsim import tool_sims

    p = make_policy(CACHED)
    ads = tool_sims(p)  # models that take a seed
    async with Router(p, log_path=None, adapters=ads) as router:
        results = [await router.generate("seeded", temperature=0, seed=7) for _ in range(2)]
    assert [r.cached for r in results] == [False, False]
    assert ads["a-small"].calls == 2

    p = make_policy(CACHED.replace("normalize: [whitespace]}", "normalize: [whitespace], seeded: true}"))
    assert p.cache.seeded
    ads = tool_sims(p)
    async with Router(p, log_path=None, adapters=ads) as router:
        same = [await router.generate("seeded", temperature=0, seed=7) for _ in range(2)]
        other = await router.generate("seeded", temperature=0, seed=8)
    assert [r.cached for r in same] == [False, True]
    assert not other.cached  # the seed is part of the key
    assert ads["a-small"].calls == 2


async def test_waiters_on_a_failing_leader_are_each_logged(tmp_path: Path, rows: RowsFn) -> None:
    from adapters.errors import ServerError
    from engine.errors import AllModelsFailed

    p = make_policy(CACHED)
    ads = sims(p)
    for a in ads.values():
        a.time_scale, a._mu, a._sigma = 1.0, __import__("math").log(20.0), 0.0  # a fixed 20 ms upstream
        a.script(*[ServerError] * 8)
    router = Router(p, log_path=tmp_path / "log.db", adapters=ads)
    results = await asyncio.gather(*(router.generate("doomed", temperature=0) for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, AllModelsFailed) for r in results)
    assert sum(a.calls for a in ads.values()) == 8  # one leader walked the plan; the others waited
    await router.aclose()
    logged = rows("requests")
    assert len(logged) == 5 and {r["outcome"] for r in logged} == {"failed"}
    assert len({r["id"] for r in logged}) == 5
