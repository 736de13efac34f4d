"""Quota windows, limits, scopes, reserve/settle/release, probes and cross-process atomicity."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import QuotaExceeded
from engine.policy.model import OnExceed, Quota, QuotaLimit, Window
from engine.runtime.clock import ManualClock
from engine.runtime.quotas import QuotaContext, QuotaManager, window_bounds
from tests import quota_worker

UTC = dt.timezone.utc
CTX = QuotaContext("acme", "key-1", "gpt-4o", "openai")


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def quota(
    name: str = "q",
    scope: tuple[str, ...] = (),
    window: Window = "day",
    *,
    on_exceed: OnExceed = "reject",
    requests: int | None = None,
    tokens: int | None = None,
    cost_usd: float | None = None,
) -> Quota:
    limit = QuotaLimit(requests=requests, tokens=tokens, cost_usd=cost_usd)
    return Quota(name=name, scope=scope, window=window, limit=limit, on_exceed=on_exceed)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(ts(2024, 6, 1, 12, 0, 0))


@pytest.fixture(params=["memory", "file"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "q.db"


@pytest.fixture
def make(where: Path | None, clock: ManualClock) -> Iterator[Any]:
    made: list[QuotaManager] = []

    def _make(*quotas: Quota, **kw: Any) -> QuotaManager:
        mgr = QuotaManager(quotas, path=where, clock=clock, **kw)
        made.append(mgr)
        return mgr

    yield _make
    for mgr in made:
        mgr.close()


def row(mgr: QuotaManager, name: str, scope_key: str = "") -> tuple[Any, ...]:
    rows = [r for r in mgr.usage() if r["quota"] == name and r["scope_key"] == scope_key]
    assert len(rows) <= 1
    return (rows[0]["requests"], rows[0]["tokens"], rows[0]["cost_usd"]) if rows else (0, 0, 0.0)


# -- calendar windows --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "now", "start", "end"),
    [
        ("minute", ts(2024, 6, 1, 12, 0, 59), ts(2024, 6, 1, 12, 0), ts(2024, 6, 1, 12, 1)),
        ("minute", ts(2024, 6, 1, 12, 1, 0), ts(2024, 6, 1, 12, 1), ts(2024, 6, 1, 12, 2)),
        ("hour", ts(2024, 6, 1, 23, 59, 59), ts(2024, 6, 1, 23), ts(2024, 6, 2)),
        ("day", ts(2024, 2, 28, 23, 59, 59), ts(2024, 2, 28), ts(2024, 2, 29)),
        ("day", ts(2024, 2, 29), ts(2024, 2, 29), ts(2024, 3, 1)),
        ("month", ts(2024, 1, 31, 23, 59, 59), ts(2024, 1, 1), ts(2024, 2, 1)),
        ("month", ts(2024, 2, 15), ts(2024, 2, 1), ts(2024, 3, 1)),  # leap February
        ("month", ts(2023, 2, 15), ts(2023, 2, 1), ts(2023, 3, 1)),
        ("month", ts(2023, 12, 31, 23, 59, 59), ts(2023, 12, 1), ts(2024, 1, 1)),
        ("month", ts(2024, 1, 1), ts(2024, 1, 1), ts(2024, 2, 1)),
        ("month", ts(2024, 4, 30, 23, 59, 59), ts(2024, 4, 1), ts(2024, 5, 1)),
    ],
)
def test_window_bounds(window: Window, now: float, start: float, end: float) -> None:
    assert window_bounds(window, now) == (start, end)
    assert window_bounds(window, end - 1e-3) == (start, end)


@pytest.mark.parametrize(
    ("window", "before_boundary", "boundary", "next_reset"),
    [
        ("minute", ts(2024, 6, 1, 12, 0, 59), ts(2024, 6, 1, 12, 1), ts(2024, 6, 1, 12, 2)),
        ("hour", ts(2024, 6, 1, 12, 59, 59), ts(2024, 6, 1, 13), ts(2024, 6, 1, 14)),
        ("day", ts(2024, 12, 31, 23, 59, 59), ts(2025, 1, 1), ts(2025, 1, 2)),
        ("month", ts(2024, 1, 31, 23, 59, 59), ts(2024, 2, 1), ts(2024, 3, 1)),
        ("month", ts(2024, 12, 31, 23, 59, 59), ts(2025, 1, 1), ts(2025, 2, 1)),
    ],
)
def test_window_rolls_over_at_calendar_boundary(
    make: Any, clock: ManualClock, window: Window, before_boundary: float, boundary: float, next_reset: float
) -> None:
    clock.advance(before_boundary - clock.time())
    mgr = make(quota("w", window=window, requests=2))
    first = mgr.reserve(CTX, 10, 0.0)
    assert first.buckets[0].resets_at == boundary
    mgr.reserve(CTX, 10, 0.0)
    with pytest.raises(QuotaExceeded) as info:
        mgr.reserve(CTX, 10, 0.0)
    assert (info.value.quota, info.value.measure, info.value.resets_at) == ("w", "requests", boundary)
    assert mgr.remaining("w", CTX) == {"requests": 0.0, "resets_at": boundary}

    clock.advance(1.0)  # exactly on the boundary: a fresh window
    assert clock.time() == boundary
    assert mgr.probe(CTX, 10, 0.0) is None
    res = mgr.reserve(CTX, 10, 0.0)
    assert (res.buckets[0].window_start, res.buckets[0].resets_at) == (boundary, next_reset)
    assert res.buckets[0].admitted.requests == 1
    assert row(mgr, "w") == (1, 10, 0.0)


def test_reject_names_quota_measure_and_reset(make: Any) -> None:
    mgr = make(quota("tenant-daily", ("tenant",), requests=1))
    mgr.reserve(CTX, 5, 0.01)
    with pytest.raises(QuotaExceeded) as info:
        mgr.reserve(CTX, 5, 0.01)
    e = info.value
    assert (e.quota, e.scope_key, e.measure, e.limit, e.used) == ("tenant-daily", "tenant=acme", "requests", 1, 1)
    assert e.resets_at == ts(2024, 6, 2)
    assert "'tenant-daily'" in str(e) and "2024-06-02 00:00:00 UTC" in str(e)


# -- limits on each measure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "est", "fits"),
    [
        ({"requests": 3}, (1, 0.0), 3),
        ({"tokens": 1000}, (300, 0.0), 3),  # 900 fits, 1200 does not
        ({"tokens": 900}, (300, 0.0), 3),  # exactly at the limit is allowed
        ({"cost_usd": 0.3}, (0, 0.1), 3),  # 0.1 * 3 is 0.30000000000000004 in floats: still fits
        ({"cost_usd": 1.0, "tokens": 10_000, "requests": 100}, (10, 0.25), 4),
    ],
)
def test_limit_on_each_measure(make: Any, limit: dict[str, Any], est: tuple[int, float], fits: int) -> None:
    mgr = make(quota("q", **limit))
    for _ in range(fits):
        assert mgr.probe(CTX, *est) is None
        mgr.reserve(CTX, *est)
    reason = mgr.probe(CTX, *est)
    assert reason is not None and "'q'" in reason
    with pytest.raises(QuotaExceeded):
        mgr.reserve(CTX, *est)
    assert row(mgr, "q")[0] == fits  # the refused reservation added nothing


def test_estimate_larger_than_limit_never_fits(make: Any) -> None:
    mgr = make(quota("q", tokens=100))
    with pytest.raises(QuotaExceeded) as info:
        mgr.reserve(CTX, 101, 0.0)
    assert (info.value.measure, info.value.used) == ("tokens", 0)
    assert row(mgr, "q") == (0, 0, 0.0)


def test_refusal_by_one_quota_adds_nothing_to_the_others(make: Any) -> None:
    mgr = make(quota("wide", requests=100), quota("narrow", ("tenant",), requests=1))
    mgr.reserve(CTX, 1, 0.0)
    with pytest.raises(QuotaExceeded) as info:
        mgr.reserve(CTX, 1, 0.0)
    assert info.value.quota == "narrow"
    assert row(mgr, "wide") == (1, 1, 0.0)


# -- scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "same", "other", "key"),
    [
        ((), QuotaContext("other", "k9", "claude", "anthropic"), None, ""),  # global: one bucket for all
        (
            ("tenant",),
            QuotaContext("acme", "k9", "claude", "anthropic"),
            QuotaContext("beta", "key-1", "gpt-4o", "openai"),
            "tenant=acme",
        ),
        (
            ("key",),
            QuotaContext("beta", "key-1", "claude", "anthropic"),
            QuotaContext("acme", "k9", "gpt-4o", "openai"),
            "key=key-1",
        ),
        (
            ("model",),
            QuotaContext("beta", "k9", "gpt-4o", "azure"),
            QuotaContext("acme", "key-1", "gpt-4o-mini", "openai"),
            "model=gpt-4o",
        ),
        (
            ("provider",),
            QuotaContext(None, None, "o1", "openai"),
            QuotaContext("acme", "key-1", "gpt-4o", "azure"),
            "provider=openai",
        ),
        (
            ("provider", "tenant"),
            QuotaContext("acme", None, "o1", "openai"),
            QuotaContext("acme", "key-1", "gpt-4o", "azure"),
            "tenant=acme,provider=openai",
        ),
    ],
)
def test_scope_counts_per_value(
    make: Any, scope: tuple[str, ...], same: QuotaContext, other: QuotaContext | None, key: str
) -> None:
    mgr = make(quota("s", scope, requests=1))
    res = mgr.reserve(CTX, 1, 0.0)
    assert res.buckets[0].scope_key == key
    with pytest.raises(QuotaExceeded) as info:
        mgr.reserve(same, 1, 0.0)  # shares the bucket
    assert info.value.scope_key == key
    if other is not None:
        assert mgr.reserve(other, 1, 0.0).buckets[0].scope_key != key  # its own bucket, with room
        assert len(mgr.usage()) == 2


@pytest.mark.parametrize("field", ["tenant", "key"])
def test_scope_with_missing_field_does_not_apply(make: Any, field: str) -> None:
    mgr = make(quota("per", (field,), requests=1), quota("all", requests=3))
    mgr.reserve(CTX, 1, 0.0)
    anonymous = QuotaContext(None if field == "tenant" else "acme", None if field == "key" else "key-1", "m", "p")
    res = mgr.reserve(anonymous, 1, 0.0)
    assert [b.quota for b in res.buckets] == ["all"]
    assert mgr.remaining("per", anonymous) == {}
    assert mgr.probe(anonymous, 1, 0.0) is None
    mgr.reserve(anonymous, 1, 0.0)
    with pytest.raises(QuotaExceeded) as info:
        mgr.reserve(anonymous, 1, 0.0)
    assert info.value.quota == "all"


def test_scope_values_with_separators_do_not_collide(make: Any) -> None:
    mgr = make(quota("s", ("tenant", "key"), requests=1))
    mgr.reserve(QuotaContext("a,key=b", "c", "m", "p"), 1, 0.0)
    mgr.reserve(QuotaContext("a", "b,key=c", "m", "p"), 1, 0.0)  # would share "tenant=a,key=b,key=c" unescaped
    assert sorted(str(r["scope_key"]) for r in mgr.usage()) == ["tenant=a%2Ckey%3Db,key=c", "tenant=a,key=b%2Ckey%3Dc"]


# -- settle and release ------------------------------------------------------------------------


def test_settle_replaces_estimate(make: Any) -> None:
    mgr = make(quota("q", ("tenant",), tokens=1000, cost_usd=1.0), quota("g", requests=10))
    res = mgr.reserve(CTX, 400, 0.4)
    assert row(mgr, "q", "tenant=acme") == (1, 400, 0.4)
    mgr.settle(res, 150, 0.15)
    assert row(mgr, "q", "tenant=acme") == (1, 150, 0.15)
    assert row(mgr, "g") == (1, 150, 0.15)
    assert mgr.remaining("q", CTX) == {"cost_usd": 0.85, "tokens": 850.0, "resets_at": ts(2024, 6, 2)}
    failed = mgr.reserve(CTX, 500, 0.5)
    mgr.settle(failed, 0, 0.0)  # a failed vendor call keeps its request
    assert row(mgr, "q", "tenant=acme") == (2, 150, 0.15)
    over = mgr.reserve(CTX, 100, 0.1)
    mgr.settle(over, 130, 0.13)  # actual above the estimate is recorded as spent
    assert row(mgr, "q", "tenant=acme") == (3, 280, 0.28)


def test_release_gives_everything_back(make: Any) -> None:
    mgr = make(quota("q", requests=1, tokens=100, cost_usd=0.1))
    res = mgr.reserve(CTX, 100, 0.1)
    assert mgr.probe(CTX, 1, 0.0) is not None
    mgr.release(res)
    assert row(mgr, "q") == (0, 0, 0.0)
    assert mgr.probe(CTX, 100, 0.1) is None
    mgr.reserve(CTX, 100, 0.1)


def test_settle_and_release_only_once(make: Any) -> None:
    mgr = make(quota("q", requests=5))
    res = mgr.reserve(CTX, 10, 0.0)
    mgr.settle(res, 5, 0.0)
    with pytest.raises(ValueError, match="already"):
        mgr.settle(res, 5, 0.0)
    with pytest.raises(ValueError, match="already"):
        mgr.release(res)
    assert row(mgr, "q") == (1, 5, 0.0)
    with pytest.raises(ValueError):
        mgr.reserve(CTX, -1, 0.0)
    with pytest.raises(ValueError):
        mgr.settle(mgr.reserve(CTX, 1, 0.0), 0, -0.5)


def test_settle_after_rollover_goes_to_the_reserved_window(make: Any, clock: ManualClock) -> None:
    mgr = make(quota("m", window="minute", tokens=1000))
    clock.advance(59.0)
    res = mgr.reserve(CTX, 800, 0.0)
    old_start = res.buckets[0].window_start
    clock.advance(1.0)
    fresh = mgr.reserve(CTX, 900, 0.0)  # the new window is empty again
    mgr.settle(res, 300, 0.0)
    assert res.buckets[0].window_start == old_start != fresh.buckets[0].window_start
    assert row(mgr, "m") == (1, 900, 0.0)  # the new window only holds `fresh`
    clock.advance(-1.0)  # look back at the old window
    assert row(mgr, "m") == (1, 300, 0.0)


def test_no_applicable_quota_touches_nothing(make: Any) -> None:
    mgr = make(quota("per-key", ("key",), requests=1))
    anon = QuotaContext("acme", None, "m", "p")
    for _ in range(3):
        res = mgr.reserve(anon, 10, 1.0)
        assert res.buckets == ()
        mgr.settle(res, 10, 1.0)
    assert mgr.usage() == []


# -- probe -------------------------------------------------------------------------------------


def test_probe_reason_and_downgrade(make: Any) -> None:
    mgr = make(
        quota("spend", ("tenant",), cost_usd=1.0), quota("cheap-only", ("model",), on_exceed="downgrade", tokens=500)
    )
    assert mgr.downgrade_quotas == frozenset({"cheap-only"})
    mgr.reserve(CTX, 400, 0.75)
    reason = mgr.probe(CTX, 10, 0.5)
    assert reason == (
        "quota 'spend' (tenant=acme, on_exceed=reject): cost_usd used 0.75 + 0.5 > limit 1; "
        "resets at 2024-06-02 00:00:00 UTC"
    )
    block = mgr.check(CTX, 200, 0.01)
    assert block is not None and (block.quota, block.on_exceed, block.measure) == ("cheap-only", "downgrade", "tokens")
    with pytest.raises(QuotaExceeded) as info:  # downgrade quotas refuse a reservation too
        mgr.reserve(CTX, 200, 0.01)
    assert info.value.quota == "cheap-only"
    assert mgr.probe(QuotaContext("acme", None, "mini", "openai"), 200, 0.01) is None
    probe = mgr.probe_fn(tenant="acme", key=None, provider_of={"gpt-4o": "openai", "mini": "openai"})
    assert probe("gpt-4o", 200, 0.01) is not None and probe("mini", 200, 0.01) is None


def test_probe_matches_reserve(make: Any, clock: ManualClock) -> None:
    rng = random.Random(7)
    mgr = make(
        quota("t", ("tenant",), "minute", tokens=3000, cost_usd=0.5),
        quota("k", ("key",), "hour", requests=40),
        quota("m", ("tenant", "model"), "day", cost_usd=0.3, requests=25),
    )
    open_: list[Any] = []
    agreed = refused = 0
    for _ in range(600):
        ctx = QuotaContext(rng.choice(["a", "b", None]), rng.choice(["k1", "k2", None]), rng.choice(["x", "y"]), "p")
        est_tokens, est_cost = rng.randint(0, 400), rng.choice([0.0, 0.01, 0.05])
        reason = mgr.probe(ctx, est_tokens, est_cost)
        try:
            open_.append(mgr.reserve(ctx, est_tokens, est_cost))
            assert reason is None
        except QuotaExceeded as e:
            assert reason is not None and f"'{e.quota}'" in reason and e.measure in reason
            refused += 1
        agreed += 1
        if open_ and rng.random() < 0.4:
            res = open_.pop(rng.randrange(len(open_)))
            if rng.random() < 0.3:
                mgr.release(res)
            else:
                mgr.settle(res, rng.randint(0, res.est_tokens), res.est_cost * rng.random())
        if rng.random() < 0.02:
            clock.advance(rng.choice([10.0, 61.0]))
    assert agreed == 600 and 50 < refused < 550  # both outcomes were exercised


def test_probe_cache_is_bounded_by_staleness(tmp_path: Path, clock: ManualClock) -> None:
    q = quota("q", requests=2)
    path = tmp_path / "shared.db"
    here = QuotaManager([q], path=path, clock=clock, probe_max_age_s=0.5)
    there = QuotaManager([q], path=path, clock=clock)  # stands for another process
    try:
        assert here.probe(CTX, 1, 0.0) is None  # caches "0 requests used"
        there.reserve(CTX, 1, 0.0)
        there.reserve(CTX, 1, 0.0)
        assert here.probe(CTX, 1, 0.0) is None  # stale, within its bound
        with pytest.raises(QuotaExceeded):
            here.reserve(CTX, 1, 0.0)  # reserve always reads the file
        assert here.probe(CTX, 1, 0.0) is not None  # ... and refreshes what probe sees
    finally:
        here.close()
        there.close()


def test_probe_rereads_after_max_age(tmp_path: Path, clock: ManualClock) -> None:
    q = quota("q", requests=1)
    path = tmp_path / "shared.db"
    here = QuotaManager([q], path=path, clock=clock, probe_max_age_s=0.5)
    there = QuotaManager([q], path=path, clock=clock)
    try:
        assert here.probe(CTX, 1, 0.0) is None
        there.reserve(CTX, 1, 0.0)
        clock.advance(0.4)
        assert here.probe(CTX, 1, 0.0) is None
        clock.advance(0.2)
        assert here.probe(CTX, 1, 0.0) is not None
    finally:
        here.close()
        there.close()


# -- storage -----------------------------------------------------------------------------------


def test_shares_the_decision_log_file(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "decisions.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE decisions (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("INSERT INTO decisions (body) VALUES ('kept')")
    first = QuotaManager([quota("q", requests=5)], path=path, clock=clock)
    first.settle(first.reserve(CTX, 7, 0.5), 3, 0.25)
    first.close()
    again = QuotaManager([quota("q", requests=5)], path=str(path), clock=clock)  # schema already there
    assert row(again, "q") == (1, 3, 0.25)
    again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT body FROM decisions").fetchall() == [("kept",)]
        cols = [c[1] for c in db.execute("PRAGMA table_info(quota_usage)")]
        pk = [c[1] for c in sorted(db.execute("PRAGMA table_info(quota_usage)"), key=lambda c: c[5]) if c[5]]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert cols == ["quota", "scope_key", "window_start", "requests", "tokens", "cost_usd"]
    assert pk == ["quota", "scope_key", "window_start"]


def test_usage_rows_and_prune(make: Any, clock: ManualClock) -> None:
    mgr = make(quota("d", ("tenant",), "day", cost_usd=2.0, tokens=100), quota("m", window="minute", requests=9))
    mgr.reserve(CTX, 10, 0.5)
    mgr.reserve(QuotaContext("beta", None, "m", "p"), 20, 0.25)
    rows = mgr.usage()
    assert [(r["quota"], r["scope_key"], r["requests"], r["tokens"], r["cost_usd"]) for r in rows] == [
        ("d", "tenant=acme", 1, 10, 0.5),
        ("d", "tenant=beta", 1, 20, 0.25),
        ("m", "", 2, 30, 0.75),
    ]
    assert (rows[0]["window_start"], rows[0]["resets_at"]) == (ts(2024, 6, 1), ts(2024, 6, 2))
    assert (rows[0]["limit_cost_usd"], rows[0]["limit_tokens"], rows[0]["limit_requests"]) == (2.0, 100, None)
    clock.advance(120.0)
    assert [r["quota"] for r in mgr.usage()] == ["d", "d"]  # the minute window rolled over
    assert mgr.prune(keep_s=60.0) == 1  # the old minute row; the day rows are current
    clock.advance(86400 * 3)
    assert mgr.prune(keep_s=86400.0) == 2
    assert mgr.usage() == []


def test_rejects_bad_quotas(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="scope"):
        QuotaManager([quota("x", ("user",), requests=1)], path=None, clock=clock)
    with pytest.raises(ValueError, match="limits nothing"):
        QuotaManager([quota("x")], path=None, clock=clock)
    with pytest.raises(ValueError, match="unique"):
        QuotaManager([quota("x", requests=1), quota("x", tokens=1)], path=None, clock=clock)
    mgr = QuotaManager([quota("x", requests=1)], path=None, clock=clock)
    with pytest.raises(KeyError):
        mgr.remaining("nope", CTX)
    mgr.close()


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_reserves_in_one_process_never_overshoot(make: Any) -> None:
    mgr = make(quota("t", ("tenant",), requests=37, tokens=4000), quota("g", cost_usd=0.5))
    rng = random.Random(3)

    async def one(i: int) -> int:
        est = rng.randint(20, 200)
        try:
            res = await mgr.areserve(CTX, est, est / 10_000)
        except QuotaExceeded:
            return 0
        await asyncio.sleep(0)
        if i % 5 == 0:
            await mgr.arelease(res)
            return 0
        await mgr.asettle(res, est // 2, est / 20_000)
        return 1

    settled = sum(await asyncio.gather(*(one(i) for i in range(300))))
    requests, tokens, cost = row(mgr, "t", "tenant=acme")
    assert requests == settled and requests <= 37
    assert tokens <= 4000 and cost <= 0.5 + 1e-9
    assert row(mgr, "g") == (requests, tokens, cost)


async def test_waiting_writes_move_off_the_event_loop(tmp_path: Path, clock: ManualClock) -> None:
    """Another process holds the write lock: every areserve must fall back to a thread, then all
    run against each other; the limit still holds exactly."""
    path = tmp_path / "q.db"
    mgr = QuotaManager([quota("q", requests=25)], path=path, clock=clock)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        tasks = [asyncio.ensure_future(mgr.areserve(CTX, 1, 0.0)) for _ in range(60)]
        await asyncio.sleep(0)  # every task tried the non-waiting path once and is now in a thread
        assert not any(t.done() for t in tasks)  # nobody got through while the lock was held
        blocker.execute("COMMIT")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 25
        assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))
        assert row(mgr, "q") == (25, 25, 0.0)
    finally:
        blocker.close()
        mgr.close()


def run_four_processes(path: str, scenario: str) -> list[dict[str, Any]]:
    """50 concurrent tasks over 4 spawned processes (13+13+12+12), 6 reserve -> settle rounds each."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    layout = [(0, 13), (1, 13), (2, 12), (3, 12)]
    procs = [ctx.Process(target=quota_worker.run, args=(path, scenario, w, n, 6, barrier, queue)) for w, n in layout]
    for p in procs:
        p.start()
    try:
        reports = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    errors = [r for _, r in reports if isinstance(r, str)]
    assert not errors, errors[0]
    attempts = [a for _, r in reports for a in r]
    assert len(attempts) == 300
    return attempts


def db_rows(path: str) -> dict[tuple[str, str], tuple[int, int, float]]:
    with sqlite3.connect(path) as db:
        sql = "SELECT quota, scope_key, requests, tokens, cost_usd FROM quota_usage"
        return {(q, k): (r, t, c) for q, k, r, t, c in db.execute(sql)}


def assert_ledger(attempts: list[dict[str, Any]], quota_name: str, limit: QuotaLimit) -> None:
    """At every admission, in whichever process, the row (settled + in flight) was within the limit."""
    seen = 0
    for a in attempts:
        for name, _, requests, tokens, cost in a.get("buckets", ()):
            if name == quota_name:
                seen += 1
                assert limit.requests is None or requests <= limit.requests
                assert limit.tokens is None or tokens <= limit.tokens
                assert limit.cost_usd is None or cost <= limit.cost_usd + 1e-9
    assert seen > 0


def assert_settled_exactly(
    rows: dict[tuple[str, str], tuple[int, int, float]], key: tuple[str, str], admitted: list[dict[str, Any]]
) -> None:
    """Nothing lost between processes: the file holds exactly what they settled."""
    requests, tokens, cost = rows[key]
    assert requests == len(admitted)
    assert tokens == sum(a["actual_tokens"] for a in admitted)
    assert cost == pytest.approx(sum(a["actual_cost"] for a in admitted), abs=1e-9)


def test_four_processes_hot_row_request_cap_is_met_exactly(tmp_path: Path) -> None:
    """All 50 concurrent tasks of 4 processes share one row; 300 attempts against a cap of 100."""
    path = str(tmp_path / "shared.db")
    attempts = run_four_processes(path, "hot")
    admitted = [a for a in attempts if a["admitted"]]
    rows = db_rows(path)
    assert len(admitted) == 100 == rows[("global", "")][0]  # not one request over, none lost
    assert {(a["quota"], a["measure"]) for a in attempts if not a["admitted"]} == {("global", "requests")}
    assert_ledger(attempts, "global", quota_worker.SCENARIOS["hot"][0].limit)
    assert_settled_exactly(rows, ("global", ""), admitted)
    for tenant in quota_worker.TENANTS:
        assert_settled_exactly(rows, ("per-tenant", f"tenant={tenant}"), [a for a in admitted if a["tenant"] == tenant])


def test_four_processes_each_measure_never_overshoots(tmp_path: Path) -> None:
    """Per tenant a different measure binds; actual usage is within +-50% of the estimate."""
    path = str(tmp_path / "shared.db")
    attempts = run_four_processes(path, "measures")
    rows = db_rows(path)
    limit = quota_worker.SCENARIOS["measures"][0].limit
    assert limit.requests is not None and limit.tokens is not None and limit.cost_usd is not None
    assert_ledger(attempts, "per-tenant", limit)
    binding = {"exact": "tokens", "noisy": "cost_usd", "many": "requests"}
    for tenant in quota_worker.TENANTS:
        mine = [a for a in attempts if a["tenant"] == tenant]
        admitted = [a for a in mine if a["admitted"]]
        assert {a["measure"] for a in mine if not a["admitted"]} == {binding[tenant]}  # the limit was reached
        assert_settled_exactly(rows, ("per-tenant", f"tenant={tenant}"), admitted)
        requests, tokens, cost = rows[("per-tenant", f"tenant={tenant}")]
        assert requests <= limit.requests
        if tenant != "noisy":
            # actual <= estimate (worst-case estimates, as the router makes them): no overshoot at all
            assert tokens <= limit.tokens and cost <= limit.cost_usd + 1e-9
        else:
            # actual up to 1.5x the estimate: the total can pass the limit only by what requests in
            # flight spent beyond their estimates (admission itself never overshot: assert_ledger)
            overrun = sum(max(0.0, a["actual_cost"] - a["est_cost"]) for a in admitted)
            assert cost <= limit.cost_usd + overrun + 1e-9
            assert tokens <= limit.tokens + sum(max(0, a["actual_tokens"] - a["est_tokens"]) for a in admitted)
    assert rows[("per-tenant", "tenant=many")][0] == limit.requests  # 100 attempts, cap met exactly
