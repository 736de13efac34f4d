"""Cache effectiveness through the router: hits, tenant scoping, single flight, `when`."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
