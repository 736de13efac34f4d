"""Health tracking: circuit breaker, half-open probes, demotion and measured latency."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policy.model import CircuitThresholds, DemoteThresholds, HealthConfig, Model, Price
from engine.routing.state import RuntimeState
from engine.runtime import health as _health  # the window's internals, for the storage tests at the end
from engine.runtime.clock import ManualClock
from engine.runtime.health import HealthEvent, HealthTracker


def mk_model(name: str) -> Model:
    return Model(name=name, provider="p", id=name, price=Price(input=1, output=1), context_window=8000)


MODELS = {n: mk_model(n) for n in ("m", "other")}


class Rig:
    def __init__(self, **cfg: Any) -> None:
        cfg.setdefault("window_s", 60)
        cfg.setdefault("min_requests", 10)
        cfg.setdefault("open_circuit", CircuitThresholds(error_rate=0.5, cooldown_s=30))
        cfg.setdefault("demote", DemoteThresholds(error_rate=None, p95_latency_ms=None))
        self.clock = ManualClock()
        self.events: list[HealthEvent] = []
        self.h = HealthTracker(HealthConfig(**cfg), MODELS, clock=self.clock, on_event=self.events.append)

    def ok(self, n: int = 1, latency: float = 100.0, model: str = "m") -> None:
        for _ in range(n):
            self.h.record(model, ok=True, latency_ms=latency)

    def fail(self, n: int = 1, cls: str = "ServerError", model: str = "m") -> None:
        for _ in range(n):
            self.h.record(model, ok=False, latency_ms=50.0, error_class=cls)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def open_circuit(self) -> None:
        self.fail(10)
        assert self.h.state("m") == "open"


# -- circuit --------------------------------------------------------------------------------


def test_circuit_waits_for_min_requests() -> None:
    r = Rig()
    r.fail(9)
    assert r.h.state("m") == "closed" and r.h.allow("m")
    assert r.events == []
    r.fail()
    assert r.h.state("m") == "open"
    assert r.kinds() == ["circuit_open"]
    assert r.events[0].model == "m" and "10/10 failed" in r.events[0].detail and "ServerError x10" in r.events[0].detail


def test_circuit_opens_exactly_at_the_threshold() -> None:
    below = Rig()
    below.ok(6)
    below.fail(4)  # 40%
    assert below.h.state("m") == "closed"
    at = Rig()
    at.ok(5)
    at.fail(5)  # 50% == error_rate
    assert at.h.state("m") == "open"


def test_open_circuit_blocks_and_says_when_it_probes() -> None:
    r = Rig()
    r.open_circuit()
    assert not r.h.allow("m")
    assert r.h.allow("other")
    r.clock.advance(10)
    reasons = r.h.open_circuits()
    assert set(reasons) == {"m"}
    assert "10/10 failed (100%)" in reasons["m"] and "probe in 20.0s" in reasons["m"]
    r.clock.advance(19.9)
    assert not r.h.allow("m")
    assert r.h.state("m") == "open"


def test_half_open_lets_exactly_one_probe_through() -> None:
    r = Rig()
    r.open_circuit()
    r.clock.advance(30)
    assert r.h.open_circuits() == {}  # so that a decision can pick it for the probe
    assert r.h.state("m") == "half_open"
    assert r.h.allow("m") is True
    assert [r.h.allow("m") for _ in range(5)] == [False] * 5
    assert "probe in flight" in r.h.open_circuits()["m"]
    assert r.kinds() == ["circuit_open", "circuit_half_open"]


def test_successful_probe_closes_and_resets_the_window() -> None:
    r = Rig()
    r.open_circuit()
    r.clock.advance(30)
    assert r.h.allow("m")
    r.ok(latency=120)
    assert r.h.state("m") == "closed"
    assert r.h.allow("m") and r.h.allow("m")
    assert r.kinds() == ["circuit_open", "circuit_half_open", "circuit_closed"]
    # the ten old failures are gone: nine new ones (9/10 with the probe) do not reopen it
    r.fail(8)
    assert r.h.state("m") == "closed"
    r.fail()
    assert r.h.state("m") == "open"  # 9/10 >= 50% once min_requests is back


def test_failed_probe_reopens_for_another_cooldown() -> None:
    r = Rig()
    r.open_circuit()
    r.clock.advance(30)
    assert r.h.allow("m")
    r.fail(cls="Timeout")
    assert r.h.state("m") == "open"
    assert not r.h.allow("m")
    assert "probe failed: Timeout" in r.events[-1].detail
    r.clock.advance(29)
    assert r.h.state("m") == "open"
    r.clock.advance(1)
    assert r.h.allow("m")
    assert r.kinds() == ["circuit_open", "circuit_half_open", "circuit_open", "circuit_half_open"]


def test_inconclusive_probe_lets_another_probe_go() -> None:
    r = Rig()
    r.open_circuit()
    r.clock.advance(30)
    assert r.h.allow("m")
    r.fail(cls="RateLimited")
    assert r.h.state("m") == "half_open"
    assert r.h.allow("m") and not r.h.allow("m")


def test_lost_probe_expires() -> None:
    r = Rig()
    r.open_circuit()
    r.clock.advance(30)
    assert r.h.allow("m")
    r.clock.advance(59)
    assert not r.h.allow("m")
    r.clock.advance(1)  # a window (60 s) without an answer: the probe is presumed lost
    assert r.h.allow("m")
    assert not r.h.allow("m")


def test_stragglers_while_open_do_not_flip_the_circuit() -> None:
    r = Rig()
    r.open_circuit()
    r.ok(20)  # requests sent before the circuit opened, finishing now
    assert r.h.state("m") == "open" and not r.h.allow("m")
    assert r.kinds() == ["circuit_open"]


def test_rate_limits_do_not_open_circuits() -> None:
    r = Rig(demote=DemoteThresholds(error_rate=0.1))
    r.fail(50, cls="RateLimited")
    r.fail(5, cls="ContextTooLong")
    assert r.h.state("m") == "closed"
    assert r.h.demoted() == {} and r.events == []
    r.ok(5)
    r.fail(5)  # 5/10: only real failures count, and they do
    assert r.h.state("m") == "open"


def test_unclassified_failure_counts() -> None:
    r = Rig()
    for _ in range(10):
        r.h.record("m", ok=False, latency_ms=1.0)
    assert r.h.state("m") == "open"
    assert "Error x10" in r.events[0].detail


def test_window_expiry_forgets_old_outcomes() -> None:
    r = Rig()
    r.fail(9)
    r.clock.advance(60)
    r.fail()
    assert r.h.state("m") == "closed"  # the nine old failures left the window
    r.clock.advance(30)
    r.fail(8)
    assert r.h.state("m") == "closed"  # 9 in the window
    r.fail()
    assert r.h.state("m") == "open"


def test_models_are_independent() -> None:
    r = Rig()
    r.fail(10, model="other")
    assert r.h.state("other") == "open" and r.h.state("m") == "closed"
    assert set(r.h.open_circuits()) == {"other"}


# -- demotion -------------------------------------------------------------------------------


def test_demote_and_restore_on_error_rate() -> None:
    r = Rig(demote=DemoteThresholds(error_rate=0.2))
    r.ok(7)
    r.fail(2)
    assert r.h.demoted() == {}  # 9 < min_requests
    r.fail()  # 3/10
    assert set(r.h.demoted()) == {"m"}
    assert "3/10 failed (30%)" in r.h.demoted()["m"]
    assert r.h.state("m") == "closed"
    r.ok(5)  # 3/15 = 20%: still at the threshold
    assert "m" in r.h.demoted()
    r.ok()  # 3/16 < 20%
    assert r.h.demoted() == {}
    assert r.kinds() == ["demoted", "restored"]
    assert "back under thresholds" in r.events[-1].detail


def test_demote_and_restore_on_p95() -> None:
    r = Rig(min_requests=20, demote=DemoteThresholds(error_rate=None, p95_latency_ms=1000))
    r.ok(18, latency=100)
    r.ok(1, latency=2000)
    r.ok(1, latency=100)
    assert r.h.demoted() == {}  # p95 of 20 (nearest rank: 19th) is 100
    r.clock.advance(30)
    r.ok(1, latency=2000)  # now 2 slow of 21: the 20th is 2000
    assert "p95 latency 2000ms >= 1000ms" in r.h.demoted()["m"]
    r.clock.advance(31)  # the first twenty leave the window
    assert r.h.demoted() == {}
    assert r.kinds() == ["demoted", "restored"]
    assert "only 1 requests" in r.events[-1].detail


def test_demotion_needs_min_requests() -> None:
    r = Rig(demote=DemoteThresholds(error_rate=0.2, p95_latency_ms=500))
    r.ok(9, latency=5000)
    assert r.h.demoted() == {}
    r.ok(1, latency=5000)
    assert "m" in r.h.demoted()


# -- latency --------------------------------------------------------------------------------


def test_latency_needs_enough_successes() -> None:
    r = Rig()
    r.ok(4, latency=200)
    r.fail(10, cls="RateLimited")
    assert r.h.latency("m") is None
    assert r.h.latencies() == {}
    r.ok(1, latency=200)
    assert r.h.latency("m") == (200, 200)


def test_latency_percentiles_nearest_rank_and_failures_excluded() -> None:
    r = Rig(min_requests=1000, window_s=600)
    for v in range(100, 0, -1):
        r.ok(latency=float(v))
    r.fail(5)  # failures' latencies are not service latencies
    assert r.h.latency("m") == (50.0, 95.0)
    r.ok(latency=1000.0)  # 101 samples: 51st and 96th smallest
    assert r.h.latency("m") == (51.0, 96.0)
    assert r.h.latencies() == {"m": (51.0, 96.0)}


def test_latency_window_expiry() -> None:
    r = Rig(min_requests=5)
    r.ok(5, latency=900)
    r.clock.advance(30)
    r.ok(5, latency=100)
    assert r.h.latency("m") == (100, 900)
    r.clock.advance(30)
    assert r.h.latency("m") == (100, 100)
    r.clock.advance(30)
    assert r.h.latency("m") is None


# -- events, snapshot, errors ---------------------------------------------------------------


def test_events_are_emitted_in_order_with_wall_clock_times() -> None:
    r = Rig(demote=DemoteThresholds(error_rate=0.2))
    t0 = r.clock.time()
    r.fail(10)
    r.clock.advance(30)
    assert r.h.allow("m")
    r.ok()
    r.clock.advance(60)
    r.h.demoted()
    assert [(e.kind, e.ts - t0) for e in r.events] == [
        ("circuit_open", 0.0),  # the 10th failure reaches min_requests: opens, then demotes
        ("demoted", 0.0),
        ("circuit_half_open", 30.0),
        ("circuit_closed", 30.0),
        ("restored", 30.0),  # fresh window after closing: too few requests to stay demoted
    ]
    assert all(e.model == "m" for e in r.events)
    with pytest.raises(AttributeError):
        r.events[0].kind = "restored"  # type: ignore[misc]


def test_snapshot_is_a_runtime_state() -> None:
    r = Rig(demote=DemoteThresholds(error_rate=0.2))
    r.fail(10, model="other")
    r.ok(8, latency=300)
    r.fail(2)
    snap = r.h.snapshot()
    assert isinstance(snap, RuntimeState)
    assert set(snap.open_circuits) == {"other"}
    assert set(snap.demoted) == {"m", "other"}  # an open circuit is also over the demotion bar
    assert snap.latency_ms == {"m": (300, 300)}
    assert snap.unavailable == {} and snap.quota_probe is None


def test_busy_healthy_model_reuses_its_snapshot_and_its_latencies_stay_within_one_percent_in_rank() -> None:
    r = Rig()
    r.ok(1000, latency=100)
    first = r.h.snapshot()
    r.ok(5, latency=900)  # 5 moves of 1000: under 1%, nothing the snapshot shows has changed
    assert r.h.snapshot() is first
    samples = [100.0] * 1000 + [900.0] * 5
    for i in range(20):  # slower and slower answers: the pair is recomputed as it goes stale
        r.ok(1, latency=200 + i)
        samples.append(200.0 + i)
        got = r.h.snapshot().latency_ms["m"]
        ranked = sorted(samples)
        lo, hi = ranked[int(0.49 * len(ranked)) - 1], ranked[int(0.51 * len(ranked))]
        assert lo <= got[0] <= hi
    # a circuit change shows at once, however fresh the pair
    r.fail(2000)
    snap = r.h.snapshot()
    assert "m" in snap.open_circuits and snap is not first


def test_a_few_samples_always_give_exact_latencies() -> None:
    r = Rig()
    r.ok(5, latency=100)
    assert r.h.snapshot().latency_ms["m"] == (100, 100)
    r.ok(1, latency=700)
    assert r.h.snapshot().latency_ms["m"] == (100, 700)  # p95 of six samples is the largest


def test_no_callback_is_fine() -> None:
    h = HealthTracker(HealthConfig(min_requests=1), MODELS, clock=ManualClock())
    h.record("m", ok=False, latency_ms=1, error_class="Timeout")
    assert h.state("m") == "open"


def test_unknown_model_is_a_key_error() -> None:
    r = Rig()
    with pytest.raises(KeyError, match="unknown model 'x'"):
        r.h.record("x", ok=True, latency_ms=1)
    with pytest.raises(KeyError):
        r.h.allow("x")


# -- the window's storage: compact arrays and a chunked sorted set, against plain lists --------

class _SmallChunks(_health._SortedFloats):
    _SPLIT = 8  # tiny chunks, so that a few dozen values split and merge them many times
    _MERGE = 3


_values = st.floats(min_value=0, max_value=100, allow_nan=False, width=32) | st.sampled_from([1.0, 2.0, 2.0, 50.0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), _values), max_size=300))
def test_the_chunked_sorted_set_matches_a_sorted_list(ops: list[tuple[int, float]]) -> None:
    got, want = _SmallChunks(), []
    for op, x in ops:
        if op > 2 - (len(want) > 40) or not want:  # mostly adds, more removals once it is large
            got.add(x)
            want.append(x)
            want.sort()
        else:
            victim = want[int(x) % len(want)]  # remove a value that is there (duplicates included)
            got.remove(victim)
            want.remove(victim)
        assert len(got) == len(want)
        assert [got[i] for i in range(len(got))] == want
    with pytest.raises(IndexError):
        got[len(want)]


def test_short_chunks_merge_at_either_end() -> None:
    for order in (range(16, 8, -1), range(1, 9)):  # shrink the last chunk, then the first
        s, want = _SmallChunks(), [float(i) for i in range(1, 17)]
        for x in want:
            s.add(x)
        for i in order:
            s.remove(float(i))
            want.remove(float(i))
            assert [s[k] for k in range(len(s))] == want


class _ListWindow:
    """The window as it was kept before (a deque of tuples and one sorted list): the reference."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, str | None, float | None]] = []
        self.latencies: list[float] = []

    def add(self, now: float, error_class: str | None, latency_ms: float | None) -> None:
        self.samples.append((now, error_class, latency_ms))
        if latency_ms is not None:
            self.latencies.append(latency_ms)
            self.latencies.sort()

    def expire(self, cutoff: float) -> None:
        while self.samples and self.samples[0][0] <= cutoff:
            _, _, latency_ms = self.samples.pop(0)
            if latency_ms is not None:
                self.latencies.remove(latency_ms)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ok", "ok", "fail", "other", "expire", "reset"]),
                          st.floats(min_value=0, max_value=5, allow_nan=False), _values), max_size=400))
def test_the_window_counts_as_a_list_of_samples_would(ops: list[tuple[str, float, float]]) -> None:
    w, ref, now = _health._Window(), _ListWindow(), 0.0
    for op, dt, latency in ops:
        now += dt
        if op == "ok":
            w.add(now, None, latency)
            ref.add(now, None, latency)
        elif op in ("fail", "other"):
            cls = "ServerError" if op == "fail" else "Timeout"
            w.add(now, cls, None)
            ref.add(now, cls, None)
        elif op == "expire":
            w.expire(now - 10 * latency / 100)
            ref.expire(now - 10 * latency / 100)
        else:
            w.reset()
            ref = _ListWindow()
        failures = [c for _, c, _ in ref.samples if c is not None]
        assert len(w) == len(ref.samples) and w.errors == len(failures)
        assert w.failed_by_class == {c: failures.count(c) for c in set(failures)}
        assert len(w.latencies) == len(ref.latencies)
        if ref.latencies:
            assert [w.percentile(p) for p in (1, 50, 95, 99, 100)] == [
                ref.latencies[max((p * len(ref.latencies) + 99) // 100, 1) - 1] for p in (1, 50, 95, 99, 100)]


def test_a_long_window_expires_in_order_and_compacts() -> None:
    w = _health._Window()
    for i in range(20_000):  # more than a chunk of the sorted set and than the compaction threshold
        w.add(float(i), "ServerError" if i % 10 == 0 else None, float(i % 997))
        w.expire(i - 5_000.0)
    assert len(w) == 5_000 and w.errors == 500 and w.failed_by_class == {"ServerError": 500}
    kept = sorted(float(i % 997) for i in range(15_000, 20_000) if i % 10)
    assert len(w.latencies) == len(kept) and w.percentile(50) == kept[(50 * len(kept) + 99) // 100 - 1]
    assert len(w._times) < 20_000  # the consumed front was dropped
