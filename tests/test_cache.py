"""Exact response cache: keys, TTL, LRU, SQLite persistence, single-flight."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.policy.model import CacheConfig
from engine.runtime.cache import ResponseCache
from engine.runtime.clock import ManualClock

MSGS = [("system", "Be brief."), ("user", "What  is\n 2+2 ?")]
PARAMS: dict[str, Any] = {"max_tokens": 100, "temperature": 0}


def make(clock: ManualClock | None = None, **kw: Any) -> ResponseCache:
    return ResponseCache(CacheConfig(enabled=True, **kw), clock=clock or ManualClock())


def key(cache: ResponseCache, *, scope: str | None = "t1", target: str = "default", **over: Any) -> str:
    return cache.make_key(
        scope=scope, target=target, messages=over.get("messages", MSGS), params=over.get("params", PARAMS)
    )


# -- keys -----------------------------------------------------------------------------------


def test_key_is_sha256_hex_and_deterministic() -> None:
    c = make()
    k = key(c)
    assert len(k) == 64 and int(k, 16) >= 0
    assert key(make()) == k


def test_whitespace_normalization_collapses_runs_and_strips() -> None:
    c = make(normalize=("whitespace",))
    other = [("system", "  Be   brief. "), ("user", "What is 2+2 ?")]
    assert key(c, messages=other) == key(c)
    raw = make(normalize=())
    assert key(raw, messages=other) != key(raw)


def test_case_normalization_only_when_configured() -> None:
    upper = [(r, t.upper()) for r, t in MSGS]
    assert key(make(normalize=("whitespace", "case")), messages=upper) == key(make(normalize=("whitespace", "case")))
    assert key(make(normalize=("whitespace",)), messages=upper) != key(make(normalize=("whitespace",)))


def test_tenant_scope_separates_and_global_scope_shares() -> None:
    tenant = make(scope="tenant")
    assert key(tenant, scope="a") != key(tenant, scope="b")
    assert key(tenant, scope=None) == key(tenant, scope="")
    shared = make(scope="global")
    assert key(shared, scope="a") == key(shared, scope="b") == key(shared, scope=None)


def test_target_roles_and_params_are_part_of_the_key() -> None:
    c = make()
    base = key(c)
    assert key(c, target="premium-code") != base
    assert key(c, messages=[("user", "Be brief."), MSGS[1]]) != base
    assert key(c, params={**PARAMS, "max_tokens": 101}) != base
    assert key(c, params={**PARAMS, "stop": ["\n"]}) != base


def test_params_are_canonical() -> None:
    c = make()
    base = key(c)
    assert key(c, params={"temperature": 0, "max_tokens": 100}) == base  # order
    assert key(c, params={"max_tokens": 100, "temperature": 0.0}) == base  # 0 == 0.0
    assert key(c, params={**PARAMS, "stop": None}) == base  # unset == None
    assert key(c, params={**PARAMS, "temperature": 0.5}) != base


def test_message_boundaries_are_unambiguous() -> None:
    c = make(normalize=())
    assert key(c, messages=[("user", "ab"), ("user", "c")]) != key(c, messages=[("user", "a"), ("user", "bc")])
    assert key(c, messages=[("user", "a")], target="b") != key(c, messages=[("user", "ba")], target="")


# -- memory backend -------------------------------------------------------------------------


def test_put_get_and_stats() -> None:
    c = make()
    assert c.get("k") is None
    c.put("k", {"text": "4", "usage": {"output_tokens": 1}}, 0.002)
    assert c.get("k") == {"text": "4", "usage": {"output_tokens": 1}}
    assert c.get("k") is not None
    assert (c.hits, c.misses) == (2, 1)
    assert c.saved_cost_usd == pytest.approx(0.004)
    assert c.hit_rate == pytest.approx(2 / 3)


def test_hit_rate_is_zero_before_any_request() -> None:
    assert make().hit_rate == 0.0


def test_each_reader_gets_its_own_copy() -> None:
    c = make()
    value = {"text": "4", "choices": [1]}
    c.put("k", value, 0.0)
    value["text"] = "mutated by the producer"
    first = c.get("k")
    assert first is not None
    first["choices"].append(2)
    assert c.get("k") == {"text": "4", "choices": [1]}


def test_ttl_expiry() -> None:
    clock = ManualClock()
    c = make(clock, ttl_s=10)
    c.put("k", {"v": 1}, 0.0)
    clock.advance(9.9)
    assert c.get("k") == {"v": 1}
    clock.advance(0.1)
    assert c.get("k") is None
    assert len(c) == 0


def test_lru_bound_evicts_least_recently_used() -> None:
    c = make(max_entries=3)
    for k in "abc":
        c.put(k, {"k": k}, 0.0)
    assert c.get("a") is not None  # a is now the most recently used
    c.put("d", {"k": "d"}, 0.0)
    assert len(c) == 3
    assert c.get("b") is None
    assert [k for k in "acd" if c.get(k) is not None] == ["a", "c", "d"]


def test_overwrite_refreshes_value_and_ttl() -> None:
    clock = ManualClock()
    c = make(clock, ttl_s=10)
    c.put("k", {"v": 1}, 0.0)
    clock.advance(8)
    c.put("k", {"v": 2}, 0.0)
    clock.advance(8)
    assert c.get("k") == {"v": 2}


def test_unserializable_value_is_rejected() -> None:
    c = make()
    with pytest.raises(TypeError):
        c.put("k", {"v": object()}, 0.0)
    assert c.get("k") is None


def test_disabled_cache_stores_nothing() -> None:
    c = ResponseCache(CacheConfig(enabled=False), clock=ManualClock())
    c.put("k", {"v": 1}, 1.0)
    assert c.get("k") is None
    assert (c.hits, c.misses, len(c)) == (0, 0, 0)


async def test_disabled_cache_always_computes() -> None:
    c = ResponseCache(CacheConfig(enabled=False), clock=ManualClock())
    calls = 0

    async def compute() -> tuple[dict[str, Any], float]:
        nonlocal calls
        calls += 1
        return {"n": calls}, 0.1

    assert await c.get_or_compute("k", compute) == ({"n": 1}, False)
    assert await c.get_or_compute("k", compute) == ({"n": 2}, False)


# -- sqlite backend -------------------------------------------------------------------------


def sql(tmp_path: Path, clock: ManualClock, **kw: Any) -> ResponseCache:
    return ResponseCache(CacheConfig(enabled=True, backend="sqlite", **kw), clock=clock, path=tmp_path / "c.db")


def test_sqlite_survives_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    c = sql(tmp_path, clock)
    c.put("k", {"text": "hello"}, 0.25)
    c.close()
    again = sql(tmp_path, clock)
    assert again.get("k") == {"text": "hello"}
    assert again.saved_cost_usd == pytest.approx(0.25)
    again.close()


def test_sqlite_uses_config_path_and_needs_one(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "log.db"
    c = ResponseCache(CacheConfig(enabled=True, backend="sqlite", path=str(db)), clock=ManualClock())
    c.put("k", {"v": 1}, 0.0)
    c.close()
    assert db.exists()
    with pytest.raises(ValueError, match="cache.path"):
        ResponseCache(CacheConfig(enabled=True, backend="sqlite"), clock=ManualClock())


def test_sqlite_ttl_expiry(tmp_path: Path) -> None:
    clock = ManualClock()
    c = sql(tmp_path, clock, ttl_s=5)
    c.put("k", {"v": 1}, 0.0)
    clock.advance(4)
    assert c.get("k") == {"v": 1}
    clock.advance(1)
    assert c.get("k") is None
    assert len(c) == 1  # reads never write: the next store prunes it
    c.close()


def test_sqlite_lru_bound(tmp_path: Path) -> None:
    c = sql(tmp_path, ManualClock(), max_entries=3)
    for k in "abc":
        c.put(k, {"k": k}, 0.0)
    assert c.get("a") is not None
    c.put("d", {"k": "d"}, 0.0)
    c.put("e", {"k": "e"}, 0.0)
    assert len(c) == 3
    assert [k for k in "abcde" if c.get(k) is not None] == ["a", "d", "e"]
    c.clear()
    assert len(c) == 0
    c.close()


def test_sqlite_lru_order_survives_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    c = sql(tmp_path, clock, max_entries=2)
    c.put("a", {"k": "a"}, 0.0)
    c.put("b", {"k": "b"}, 0.0)
    assert c.get("a") is not None  # a is used last, but no store follows before closing
    c.close()
    again = sql(tmp_path, clock, max_entries=2)
    again.put("c", {"k": "c"}, 0.0)
    assert [k for k in "abc" if again.get(k) is not None] == ["a", "c"]
    again.close()


def test_sqlite_failures_cost_a_miss_not_the_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    c = sql(tmp_path, ManualClock())
    c.put("k", {"v": 1}, 0.0)
    assert c._db is not None
    c._db.execute("PRAGMA query_only = ON")  # every write now fails, as with a full disk
    c.put("other", {"v": 2}, 0.0)
    assert "store failed" in caplog.text
    assert c.get("other") is None and c.get("k") == {"v": 1}
    c._db.close()  # now reads fail as well
    assert c.get("k") is None
    assert "lookup failed" in caplog.text


async def test_sqlite_store_failure_still_returns_the_computed_value(tmp_path: Path) -> None:
    c = sql(tmp_path, ManualClock())
    assert c._db is not None
    c._db.execute("PRAGMA query_only = ON")

    async def compute() -> tuple[dict[str, Any], float]:
        return {"v": 1}, 0.1

    assert await c.get_or_compute("k", compute) == ({"v": 1}, False)
    assert await c.get_or_compute("k", compute) == ({"v": 1}, False)
    c.close()


def test_sqlite_put_prunes_expired_rows(tmp_path: Path) -> None:
    clock = ManualClock()
    c = sql(tmp_path, clock, ttl_s=5)
    c.put("old", {"v": 1}, 0.0)
    clock.advance(6)
    c.put("new", {"v": 2}, 0.0)
    assert len(c) == 1
    c.close()


# -- single flight --------------------------------------------------------------------------


async def test_concurrent_identical_requests_share_one_call() -> None:
    c = make()
    calls = 0
    gate = asyncio.Event()

    async def compute() -> tuple[dict[str, Any], float]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return {"text": "4"}, 0.01

    tasks = [asyncio.create_task(c.get_or_compute("k", compute)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [v for v, _ in results] == [{"text": "4"}] * 5
    assert sorted(hit for _, hit in results) == [False, True, True, True, True]
    assert (c.misses, c.hits, c.coalesced) == (1, 4, 4)
    assert c.saved_cost_usd == pytest.approx(0.04)
    # afterwards it is an ordinary stored hit
    assert await c.get_or_compute("k", compute) == ({"text": "4"}, True)
    assert calls == 1


async def test_different_keys_do_not_share() -> None:
    c = make()
    calls: list[str] = []

    def compute_for(k: str) -> Any:
        async def compute() -> tuple[dict[str, Any], float]:
            calls.append(k)
            await asyncio.sleep(0)
            return {"k": k}, 0.0

        return compute

    out = await asyncio.gather(*(c.get_or_compute(k, compute_for(k)) for k in "abc"))
    assert sorted(calls) == ["a", "b", "c"]
    assert [v["k"] for v, _ in out] == ["a", "b", "c"]


async def test_failure_reaches_every_waiter_and_is_not_cached() -> None:
    c = make()
    gate = asyncio.Event()
    calls = 0

    async def boom() -> tuple[dict[str, Any], float]:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise RuntimeError("upstream 500")

    tasks = [asyncio.create_task(c.get_or_compute("k", boom)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "upstream 500" for r in results)
    assert c.get("k") is None

    async def ok() -> tuple[dict[str, Any], float]:
        return {"v": 1}, 0.0

    assert await c.get_or_compute("k", ok) == ({"v": 1}, False)


async def test_unserializable_result_fails_leader_and_waiters() -> None:
    c = make()
    gate = asyncio.Event()

    async def bad() -> tuple[dict[str, Any], float]:
        await gate.wait()
        return {"v": object()}, 0.0

    tasks = [asyncio.create_task(c.get_or_compute("k", bad)) for _ in range(2)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, TypeError) for r in results)
    assert len(c) == 0


async def test_cancelled_leader_hands_over_to_a_follower() -> None:
    c = make()
    started: list[int] = []
    release = asyncio.Event()

    async def compute() -> tuple[dict[str, Any], float]:
        started.append(len(started))
        await release.wait()
        return {"by": len(started)}, 0.0

    leader = asyncio.create_task(c.get_or_compute("k", compute))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(c.get_or_compute("k", compute)) for _ in range(3)]
    await asyncio.sleep(0)
    assert started == [0]
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    for _ in range(3):
        await asyncio.sleep(0)
    assert started == [0, 1]  # exactly one follower took over
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*followers), 5)
    assert [v for v, _ in results] == [{"by": 2}] * 3
    assert sorted(hit for _, hit in results) == [False, True, True]


async def test_cancelled_follower_does_not_disturb_the_leader() -> None:
    c = make()
    release = asyncio.Event()

    async def compute() -> tuple[dict[str, Any], float]:
        await release.wait()
        return {"v": 1}, 0.0

    leader = asyncio.create_task(c.get_or_compute("k", compute))
    await asyncio.sleep(0)
    follower = asyncio.create_task(c.get_or_compute("k", compute))
    await asyncio.sleep(0)
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    release.set()
    assert await leader == ({"v": 1}, False)
    assert c.get("k") == {"v": 1}


async def test_single_flight_with_sqlite_backend(tmp_path: Path) -> None:
    c = sql(tmp_path, ManualClock())
    calls = 0

    async def compute() -> tuple[dict[str, Any], float]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return {"v": "x"}, 0.5

    results = await asyncio.gather(*(c.get_or_compute("k", compute) for _ in range(4)))
    assert calls == 1
    assert [v for v, _ in results] == [{"v": "x"}] * 4
    c.close()
    again = sql(tmp_path, ManualClock())
    assert await again.get_or_compute("k", compute) == ({"v": "x"}, True)
    assert calls == 1
    again.close()
