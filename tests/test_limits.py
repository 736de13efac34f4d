"""Rate limits: rpm/tpm buckets, concurrency slots and deadline-aware acquisition.

aiolimiter reads the event loop's clock, which a ManualClock cannot drive, so these tests run
in real time with a shortened "minute" (`period_s`) and assert counts and ordering, never
durations.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.errors import EngineError
from engine.policy.model import Limits, Model, Price, Provider
from engine.runtime.limits import LimitWouldExceedDeadline, RateLimits

FAR = 3600.0  # seconds: a deadline no test gets near


def provider(name: str = "p", **limits: Any) -> Provider:
    return Provider(name=name, adapter="simulated", limits=Limits(**limits))


def model(name: str, prov: str = "p", **limits: Any) -> Model:
    return Model(
        name=name, provider=prov, id=name, price=Price(input=1, output=1), context_window=8000, limits=Limits(**limits)
    )


def limits(provs: list[Provider], models: list[Model], period_s: float = 60.0) -> RateLimits:
    return RateLimits({p.name: p for p in provs}, {m.name: m for m in models}, period_s=period_s)


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_unlimited_model_never_waits() -> None:
    rl = limits([provider()], [model("m")])
    assert rl.wait_estimate("m", 10**9) == 0.0
    for _ in range(100):
        (await rl.acquire("m", 10**6, deadline=now() + FAR)).release()
    assert rl.wait_estimate("m", 10**9) == 0.0


def test_estimate_works_before_any_loop_use() -> None:
    rl = limits([provider(rpm=1)], [model("m", rpm=1, tpm=10)])
    assert rl.wait_estimate("m", 5) == 0.0
    assert rl.unavailable({"m": 5}, deadline=0.0) == {}


async def test_rpm_burst_then_estimate_and_move_on() -> None:
    rl = limits([provider()], [model("m", rpm=3)])
    for _ in range(3):
        assert rl.wait_estimate("m", 1) == 0.0
        (await rl.acquire("m", 1, deadline=now() + FAR)).release()
    wait = rl.wait_estimate("m", 1)
    assert 0.0 < wait <= 20.0  # one request leaks out every 60/3 s
    with pytest.raises(LimitWouldExceedDeadline) as info:
        await rl.acquire("m", 1, deadline=now() + 1.0)
    err = info.value
    assert isinstance(err, EngineError)
    assert err.model == "m" and err.wait_s > 1.0 and err.limit == "model m rpm"
    assert "model m rpm" in str(err)


async def test_giving_up_consumes_nothing() -> None:
    # Provider allows 3/min shared; model a allows 2/min of its own.
    rl = limits([provider(rpm=3)], [model("a", rpm=2), model("b")])
    for _ in range(2):
        (await rl.acquire("a", 1, deadline=now() + FAR)).release()
    for _ in range(5):
        with pytest.raises(LimitWouldExceedDeadline):
            await rl.acquire("a", 1, deadline=now() + 1.0)
    # the failed attempts did not take the provider's third slot
    assert rl.wait_estimate("b", 1) == 0.0
    (await rl.acquire("b", 1, deadline=now() + 1.0)).release()
    assert rl.wait_estimate("b", 1) > 1.0


async def test_provider_limit_is_shared_by_its_models() -> None:
    rl = limits([provider("p", rpm=2), provider("q")], [model("a"), model("b"), model("c", prov="q")])
    (await rl.acquire("a", 1, deadline=now() + FAR)).release()
    (await rl.acquire("b", 1, deadline=now() + FAR)).release()
    assert rl.wait_estimate("a", 1) > 0.0
    assert rl.wait_estimate("b", 1) > 0.0
    assert rl.wait_estimate("c", 1) == 0.0
    with pytest.raises(LimitWouldExceedDeadline) as info:
        await rl.acquire("b", 1, deadline=now() + 1.0)
    assert info.value.limit == "provider p rpm"


async def test_rate_is_never_exceeded() -> None:
    rpm, period = 4, 0.2
    rate = rpm / period
    rl = limits([provider()], [model("m", rpm=rpm)], period_s=period)
    stamps: list[float] = []

    async def one() -> None:
        async with await rl.acquire("m", 1, deadline=now() + FAR):
            stamps.append(now())

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(16))), 30)
    assert len(stamps) == 16
    stamps.sort()
    t0 = stamps[0]
    for i, t in enumerate(stamps):
        # leaky bucket: a burst of `rpm`, then `rate` per second
        assert i + 1 <= rpm + rate * (t - t0) + 1e-6, (i, t - t0)


async def test_requests_beyond_the_rate_wait_or_move_on() -> None:
    rpm, period = 4, 0.5
    rl = limits([provider()], [model("m", rpm=rpm)], period_s=period)
    horizon = 0.3  # lets about rpm + 0.3 * 8 = 6 requests through
    deadline = now() + horizon
    passed: list[float] = []
    refused: list[LimitWouldExceedDeadline] = []

    async def one() -> None:
        try:
            permit = await rl.acquire("m", 1, deadline=deadline)
        except LimitWouldExceedDeadline as e:
            refused.append(e)
        else:
            passed.append(now())
            permit.release()

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(20))), 30)
    assert len(passed) + len(refused) == 20
    assert rpm <= len(passed) <= rpm + horizon * rpm / period + 1
    assert refused and all(e.wait_s > 0 and e.limit == "model m rpm" for e in refused)


async def test_estimate_counts_queued_waiters() -> None:
    rl = limits([provider()], [model("m", rpm=1)])
    (await rl.acquire("m", 1, deadline=now() + FAR)).release()
    one_wait = rl.wait_estimate("m", 1)
    assert 55.0 < one_wait <= 60.0
    queued = asyncio.create_task(rl.acquire("m", 1, deadline=now() + FAR))
    await asyncio.sleep(0)
    assert rl.wait_estimate("m", 1) > 115.0  # behind the queued request
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert rl.wait_estimate("m", 1) <= 60.0


async def test_tpm_weighs_requests_by_tokens() -> None:
    rl = limits([provider()], [model("m", tpm=1000)])
    (await rl.acquire("m", 600, deadline=now() + FAR)).release()
    assert rl.wait_estimate("m", 300) == 0.0
    big = rl.wait_estimate("m", 500)
    assert big > 0.0
    assert rl.wait_estimate("m", 900) > big  # bigger requests wait longer
    with pytest.raises(LimitWouldExceedDeadline) as info:
        await rl.acquire("m", 500, deadline=now() + 1.0)
    assert info.value.limit == "model m tpm"
    (await rl.acquire("m", 400, deadline=now() + 1.0)).release()
    assert rl.wait_estimate("m", 1) > 0.0


async def test_tpm_request_bigger_than_capacity_is_clamped() -> None:
    rl = limits([provider(tpm=1000)], [model("m")])
    assert rl.wait_estimate("m", 5000) == 0.0
    (await rl.acquire("m", 5000, deadline=now() + 1.0)).release()
    assert rl.wait_estimate("m", 1) > 0.0  # the whole bucket was taken
    assert rl.wait_estimate("m", 5000) > rl.wait_estimate("m", 10)


async def test_concurrency_never_exceeds_the_slots() -> None:
    rl = limits([provider(concurrency=3)], [model("a", concurrency=2), model("b")])
    active = {"a": 0, "all": 0}
    peak = {"a": 0, "all": 0}

    async def one(name: str) -> None:
        async with await rl.acquire(name, 1, deadline=now() + FAR):
            active["all"] += 1
            if name == "a":
                active["a"] += 1
            peak["a"] = max(peak["a"], active["a"])
            peak["all"] = max(peak["all"], active["all"])
            for _ in range(3):
                await asyncio.sleep(0)
            active["all"] -= 1
            if name == "a":
                active["a"] -= 1

    await asyncio.wait_for(asyncio.gather(*(one("a" if i % 2 else "b") for i in range(30))), 30)
    assert peak == {"a": 2, "all": 3}
    assert active == {"a": 0, "all": 0}


async def test_concurrency_wait_past_deadline_moves_on_and_frees_everything() -> None:
    rl = limits([provider(concurrency=2)], [model("m", concurrency=1)])
    held = await rl.acquire("m", 1, deadline=now() + FAR)
    with pytest.raises(LimitWouldExceedDeadline) as info:
        await rl.acquire("m", 1, deadline=now() + 0.01)
    assert info.value.limit == "concurrency"
    with pytest.raises(LimitWouldExceedDeadline):
        await rl.acquire("m", 1, deadline=now() - 1)
    held.release()
    # the timed-out attempts left no slot taken: both provider slots are usable again
    p1 = await asyncio.wait_for(rl.acquire("m", 1, deadline=now() + FAR), 5)
    p1.release()
    p2 = await asyncio.wait_for(rl.acquire("m", 1, deadline=now() + FAR), 5)
    p2.release()


async def test_rate_refusal_gives_back_the_concurrency_slot() -> None:
    rl = limits([provider()], [model("m", rpm=1, concurrency=1)])
    (await rl.acquire("m", 1, deadline=now() + FAR)).release()
    with pytest.raises(LimitWouldExceedDeadline):
        await rl.acquire("m", 1, deadline=now() + 1.0)
    with pytest.raises(LimitWouldExceedDeadline) as info:
        await rl.acquire("m", 1, deadline=now() + 1.0)
    assert info.value.limit == "model m rpm"  # not "concurrency": the slot was given back


async def test_permit_release_is_idempotent() -> None:
    rl = limits([provider()], [model("m", concurrency=1)])
    permit = await rl.acquire("m", 1, deadline=now() + FAR)
    assert not permit.released and permit.model == "m"
    permit.release()
    permit.release()
    assert permit.released
    async with await rl.acquire("m", 1, deadline=now() + FAR) as p:
        assert not p.released
    assert p.released
    # exactly one slot exists: a double release would have let two through
    first = await rl.acquire("m", 1, deadline=now() + FAR)
    with pytest.raises(LimitWouldExceedDeadline):
        await rl.acquire("m", 1, deadline=now() + 0.01)
    first.release()


async def test_unavailable_names_models_that_would_miss_the_deadline() -> None:
    rl = limits(
        [provider("p", rpm=1), provider("q")], [model("a"), model("b", prov="q", tpm=100), model("c", prov="q")]
    )
    (await rl.acquire("a", 1, deadline=now() + FAR)).release()
    (await rl.acquire("b", 80, deadline=now() + FAR)).release()
    out = rl.unavailable({"a": 1, "b": 50, "c": 10**6}, deadline=now() + 5.0)
    assert set(out) == {"a", "b"}
    assert "provider p rpm" in out["a"] and "model b tpm" in out["b"]
    assert rl.unavailable({"b": 10}, deadline=now() + 5.0) == {}
    assert set(rl.unavailable({"a": 1, "b": 50}, deadline=now() + FAR)) == set()


def test_unknown_model_is_a_key_error() -> None:
    rl = limits([provider()], [model("m")])
    with pytest.raises(KeyError, match="unknown model 'x'"):
        rl.wait_estimate("x", 1)
