"""Per-model health from measured outcomes: circuit breaking, demotion and measured latency.

Each model keeps a sliding window (`health.window_s`) of its recent outcomes. From it:

- circuit: once the window holds `min_requests` outcomes and the error rate reaches
  `open_circuit.error_rate`, the circuit opens and the model is skipped for `cooldown_s`.
  Then it is half-open: exactly one probe request may go; success closes the circuit with a
  fresh window, failure re-opens it for another cooldown.
- demotion: with `min_requests` outcomes and an error rate of `demote.error_rate` or a
  measured p95 of `demote.p95_latency_ms` or more, the model goes to the end of every plan
  until the window is back under both thresholds (or holds too few outcomes to judge).
- latency: measured p50/p95 of successful calls replace the policy's prior once the window
  holds `min(5, min_requests)` of them.

The tracker is fed by the runtime after every attempt and read, as a `RuntimeState`, before
every decision. State changes are reported as `HealthEvent`s. All times come from the
injected clock: monotonic for windows and cooldowns, wall clock for event timestamps.
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from engine.policy.model import HealthConfig, Model
from engine.routing.state import RuntimeState
from engine.runtime.clock import Clock

__all__ = ["NEUTRAL_ERRORS", "CircuitState", "HealthEvent", "HealthEventKind", "HealthTracker"]

CircuitState = Literal["closed", "open", "half_open"]
HealthEventKind = Literal["circuit_open", "circuit_half_open", "circuit_closed", "demoted", "restored"]

SNAPSHOT_MAX_AGE_S = 0.1
"""How long `snapshot()` may be reused when nothing was recorded: expiries and cooldowns
are time-driven, and a tenth of a second late is well inside any health window."""

NEUTRAL_ERRORS: frozenset[str] = frozenset({"RateLimited", "ContextTooLong", "ContentFiltered", "InvalidInput"})
"""Error classes that say nothing about whether the model works, so they count neither as
failures nor as successes. `RateLimited` is our own traffic exceeding the account's quota at
the vendor: the model is up, the runtime already moves on at once and the limiter/Retry-After
govern when to come back; opening the circuit would turn a short throttle into a
`cooldown_s` outage and double-punish the model. `ContextTooLong` and `ContentFiltered` are
about the request, not the model; so is `InvalidInput`, the dispatcher's name for a caller's
bad input (see `engine.runtime.dispatch.is_callers_error`)."""


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A change of a model's health state.

    Attributes:
        ts: wall-clock time of the change (seconds since the epoch).
        kind: circuit_open, circuit_half_open, circuit_closed, demoted or restored.
        model: the model concerned.
        detail: why, in words (error rate, p95, probe outcome).
    """

    ts: float
    kind: HealthEventKind
    model: str
    detail: str


class _SortedFloats:
    """A sorted multiset of floats in chunks of a few thousand: adding or removing one moves at
    most a chunk's worth of memory (a single sorted list of a busy model's window, 100,000
    latencies, moved ~0.4 MB per request), and the k-th smallest is found by skipping chunks.
    Values are kept as C doubles (8 bytes each, no float objects)."""

    __slots__ = ("_chunks", "_len", "_maxes")

    _SPLIT = 4096  # a chunk this long is cut in two
    _MERGE = 512  # a chunk this short joins its neighbour

    def __init__(self) -> None:
        self._chunks: list[array[float]] = []
        self._maxes: list[float] = []  # the last (largest) value of each chunk
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, x: float) -> None:
        chunks, maxes = self._chunks, self._maxes
        self._len += 1
        if not chunks:
            chunks.append(array("d", (x,)))
            maxes.append(x)
            return
        i = bisect.bisect_left(maxes, x)
        if i == len(maxes):  # above every value: the end of the last chunk
            i -= 1
            chunk = chunks[i]
            chunk.append(x)
            maxes[i] = x
        else:
            chunk = chunks[i]
            bisect.insort(chunk, x)
        if len(chunk) >= self._SPLIT:
            self._split(i)

    def remove(self, x: float) -> None:
        """Remove one copy of `x`, which must be present."""
        chunks, maxes = self._chunks, self._maxes
        # the first chunk whose largest value is >= x holds a copy of x (chunks are ordered)
        i = bisect.bisect_left(maxes, x)
        chunk = chunks[i]
        del chunk[bisect.bisect_left(chunk, x)]
        self._len -= 1
        if not chunk:
            del chunks[i]
            del maxes[i]
            return
        maxes[i] = chunk[-1]
        if len(chunk) < self._MERGE and len(chunks) > 1:
            j = i if i + 1 < len(chunks) else i - 1  # merge chunks j and j + 1
            chunks[j].extend(chunks[j + 1])
            del chunks[j + 1]
            del maxes[j]
            if len(chunks[j]) >= self._SPLIT:
                self._split(j)

    def _split(self, i: int) -> None:
        """Cut chunk `i` in two halves (it grew to `_SPLIT`)."""
        chunks, maxes = self._chunks, self._maxes
        chunk = chunks[i]
        half = chunk[len(chunk) // 2:]
        del chunk[len(chunk) // 2:]
        chunks.insert(i + 1, half)
        maxes[i] = chunk[-1]
        maxes.insert(i + 1, half[-1])

    def __getitem__(self, k: int) -> float:
        """The k-th smallest value (0-based)."""
        if not 0 <= k < self._len:
            raise IndexError(k)
        if k < self._len // 2:
            for chunk in self._chunks:
                if k < len(chunk):
                    return chunk[k]
                k -= len(chunk)
        else:  # the high percentiles are near the end
            k = self._len - 1 - k
            for chunk in reversed(self._chunks):
                if k < len(chunk):
                    return chunk[len(chunk) - 1 - k]
                k -= len(chunk)
        raise AssertionError("unreachable: the chunks hold _len values")

    def clear(self) -> None:
        self._chunks.clear()
        self._maxes.clear()
        self._len = 0


class _Window:
    """One model's sliding window and circuit; all counters are kept in step with the samples.

    A sample is a time, a latency and whether it failed (the class of a failure is queued in
    `_classes`), in arrays consumed from the front: 17 bytes a sample instead of a tuple and its
    floats (~130 bytes), which mattered at a few thousand requests a second over a 60 s window.
    """

    __slots__ = (
        "_classes",
        "_failed",
        "_head",
        "_lat",
        "_moved",
        "_pair",
        "_times",
        "circuit",
        "demoted",
        "errors",
        "failed_by_class",
        "latencies",
        "open_reason",
        "open_until",
        "probe_at",
    )

    def __init__(self) -> None:
        # samples [_head:] of the arrays are in the window, oldest first
        self._times: array[float] = array("d")
        self._lat: array[float] = array("d")
        self._failed = bytearray()
        self._head = 0
        self._classes: deque[str] = deque()  # error class of each failed sample in the window, oldest first
        self.errors = 0
        # error class -> failures in the window, for reasons that name the dominant failure
        self.failed_by_class: dict[str, int] = {}
        # latencies of the successes in the window, kept sorted so percentiles are an index
        self.latencies = _SortedFloats()
        self._pair: tuple[float, float] | None = None  # (p50, p95) when last computed by `latency_pair`
        self._moved = 0  # latencies added or removed since then
        self.circuit: CircuitState = "closed"
        self.open_until = 0.0
        self.open_reason = ""
        # monotonic time the half-open probe was let through; None while no probe is out
        self.probe_at: float | None = None
        self.demoted: str | None = None

    def __len__(self) -> int:
        """Outcomes in the window."""
        return len(self._times) - self._head

    def add(self, now: float, error_class: str | None, latency_ms: float | None) -> None:
        self._times.append(now)
        if error_class is not None:
            self._lat.append(0.0)
            self._failed.append(1)
            self._classes.append(error_class)
            self.errors += 1
            self.failed_by_class[error_class] = self.failed_by_class.get(error_class, 0) + 1
        else:
            latency = float("nan") if latency_ms is None else latency_ms
            self._lat.append(latency)
            self._failed.append(0)
            if latency == latency:  # a latency that cannot be ordered (NaN) feeds no percentile
                self.latencies.add(latency)
                self._moved += 1

    def expire(self, cutoff: float) -> None:
        times, lat, failed, head = self._times, self._lat, self._failed, self._head
        end = len(times)
        while head < end and times[head] <= cutoff:
            if failed[head]:
                error_class = self._classes.popleft()
                self.errors -= 1
                left = self.failed_by_class[error_class] - 1
                if left:
                    self.failed_by_class[error_class] = left
                else:
                    del self.failed_by_class[error_class]
            else:
                latency = lat[head]
                if latency == latency:
                    self.latencies.remove(latency)
                    self._moved += 1
            head += 1
        if head > 1024 and 2 * head > end:  # drop the consumed front now and then: amortized O(1)
            del times[:head]
            del lat[:head]
            del failed[:head]
            head = 0
        self._head = head

    def reset(self) -> None:
        del self._times[:]
        del self._lat[:]
        del self._failed[:]
        self._head = 0
        self._classes.clear()
        self.errors = 0
        self.failed_by_class.clear()
        self.latencies.clear()
        self._pair = None

    def pair_stale(self) -> bool:
        """Whether `latency_pair` would compute afresh: the latencies moved by more than 1% of
        the window since it last did (any move at all, below 200 of them)."""
        return self._pair is None or self._moved > len(self.latencies) // 100

    def latency_pair(self) -> tuple[float, float]:
        """(p50, p95) of the latencies, recomputed only when `pair_stale`. Between two
        computations fewer than 1% of the samples were added or removed, so each figure is still
        a sample within 1% in rank of the exact one (a p50 between p49 and p51); a busy model's
        window holds ~100,000 latencies, and computing both per request was most of the health
        snapshot's cost."""
        pair = self._pair
        if pair is None or self.pair_stale():
            pair = self._pair = (self.percentile(50), self.percentile(95))
            self._moved = 0
        return pair

    def percentile(self, pct: int) -> float:
        # Nearest rank: the smallest sample with at least pct% of samples at or below it.
        lat = self.latencies
        return lat[max((pct * len(lat) + 99) // 100, 1) - 1]

    def failures(self, window_s: float) -> str:
        n = len(self)
        classes = ", ".join(f"{c} x{k}" for c, k in sorted(self.failed_by_class.items(), key=lambda kv: -kv[1]))
        detail = f": {classes}" if classes else ""
        return f"{self.errors}/{n} failed ({self.errors / n:.0%}) in the last {window_s:g}s{detail}"


class HealthTracker:
    """Measured health of every model of a policy.

    Args:
        config: the policy's `health:` section.
        models: the policy's models; only these can be recorded or queried.
        clock: time source (tests pass a `ManualClock`).
        on_event: called synchronously with each `HealthEvent`, in order.
        neutral_errors: error classes that count neither as failure nor success
            (default `NEUTRAL_ERRORS`).
    """

    def __init__(
        self,
        config: HealthConfig,
        models: Mapping[str, Model],
        *,
        clock: Clock,
        on_event: Callable[[HealthEvent], None] | None = None,
        neutral_errors: Collection[str] = NEUTRAL_ERRORS,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_event = on_event
        self._neutral = frozenset(neutral_errors)
        self._window_s = float(config.window_s)
        self._min = max(1, int(config.min_requests))
        self._min_latency = min(5, self._min)
        self._cooldown = float(config.open_circuit.cooldown_s)
        # A probe that never reports (its caller vanished) must not keep the model shut forever;
        # a window's worth of time is longer than any sane request.
        self._probe_lease = max(self._cooldown, self._window_s)
        self._w: dict[str, _Window] = {name: _Window() for name in models}
        # bumped by what changes a snapshot (see `record`) and by probe grants: invalidates it
        self._version = 0
        self._snapshot: tuple[int, float, RuntimeState] | None = None

    def _get(self, model: str) -> _Window:
        try:
            return self._w[model]
        except KeyError:
            raise KeyError(f"health: unknown model {model!r}") from None

    def _emit(self, kind: HealthEventKind, model: str, detail: str) -> None:
        if self._on_event is not None:
            self._on_event(HealthEvent(self._clock.time(), kind, model, detail))

    # -- feeding ------------------------------------------------------------------------------

    def record(self, model: str, *, ok: bool, latency_ms: float, error_class: str | None = None) -> None:
        """Record the outcome of one attempt on `model`.

        Args:
            model: the model called.
            ok: whether the attempt succeeded.
            latency_ms: how long it took; only successes feed the latency percentiles.
            error_class: the taxonomy name of the failure (`Timeout`, `RateLimited`...).

        Raises:
            KeyError: `model` is not in the policy.
        """
        w = self._get(model)
        was_healthy = w.circuit == "closed" and w.demoted is None
        try:
            self._record(model, w, ok, latency_ms, error_class)
        finally:
            # The snapshot shows circuits, demotions (with their figures) and latency pairs: a
            # healthy model's outcome changes none of them until its pair goes stale, so a busy
            # router rebuilds the snapshot every few hundred requests instead of at every one.
            if not was_healthy or w.circuit != "closed" or w.demoted is not None or w.pair_stale():
                self._version += 1

    def _record(self, model: str, w: _Window, ok: bool, latency_ms: float, error_class: str | None) -> None:
        now = self._clock.monotonic()
        failure = None if ok else (error_class or "Error")
        neutral = failure is not None and failure in self._neutral
        self._tick(model, w, now)
        if w.circuit == "half_open" and w.probe_at is not None:
            w.probe_at = None
            if neutral:
                return  # inconclusive: the next allow() sends another probe
            if failure is None:
                w.reset()
                w.circuit = "closed"
                self._emit("circuit_closed", model, f"probe succeeded in {latency_ms:.0f}ms")
            else:
                self._open(model, w, now, f"probe failed: {failure}")
            w.add(now, failure, latency_ms if failure is None else None)
            self._judge_demotion(model, w)
            return
        if neutral:
            return
        w.add(now, failure, latency_ms if failure is None else None)
        w.expire(now - self._window_s)
        n = len(w)
        if w.circuit == "closed" and n >= self._min and w.errors / n >= self.config.open_circuit.error_rate:
            self._open(model, w, now, w.failures(self._window_s))
        self._judge_demotion(model, w)

    def _open(self, model: str, w: _Window, now: float, why: str) -> None:
        w.circuit = "open"
        w.open_until = now + self._cooldown
        w.probe_at = None
        w.open_reason = why
        self._emit("circuit_open", model, f"{why}; probe after {self._cooldown:g}s")

    def _tick(self, model: str, w: _Window, now: float) -> None:
        """Let time act: an open circuit whose cooldown is over becomes half-open."""
        if w.circuit == "open" and now >= w.open_until:
            w.circuit = "half_open"
            w.probe_at = None
            self._emit("circuit_half_open", model, f"cooldown of {self._cooldown:g}s over; one probe allowed")

    def _judge_demotion(self, model: str, w: _Window) -> None:
        why = self._demotion_reason(w)
        if why is not None and w.demoted is None:
            w.demoted = why
            self._emit("demoted", model, why)
        elif why is None and w.demoted is not None:
            w.demoted = None
            n = len(w)
            if n < self._min:
                detail = f"only {n} requests in the last {self._window_s:g}s (< {self._min})"
            else:
                detail = f"back under thresholds: {w.failures(self._window_s)}"
            self._emit("restored", model, detail)
        elif why is not None:
            w.demoted = why  # still demoted: keep the figures current

    def _demotion_reason(self, w: _Window) -> str | None:
        n = len(w)
        if n < self._min:
            return None
        demote = self.config.demote
        if demote.error_rate is not None and w.errors / n >= demote.error_rate:
            return f"{w.failures(self._window_s)} (demotes at {demote.error_rate:.0%})"
        if demote.p95_latency_ms is not None and len(w.latencies) >= self._min_latency:
            p95 = w.percentile(95)
            if p95 >= demote.p95_latency_ms:
                return f"p95 latency {p95:.0f}ms >= {demote.p95_latency_ms:g}ms over {len(w.latencies)} requests"
        return None

    def _refresh(self, model: str, w: _Window, now: float) -> None:
        """Apply what the passing of time changes: expiry, demotion, half-open."""
        before = len(w)
        w.expire(now - self._window_s)
        if len(w) != before:
            self._judge_demotion(model, w)
        self._tick(model, w, now)

    # -- gate ---------------------------------------------------------------------------------

    def allow(self, model: str) -> bool:
        """Whether a request may be sent to `model` now.

        True while the circuit is closed; False while it is open; when half-open, True for
        exactly one probe at a time (until that probe is recorded), False for the others.

        Raises:
            KeyError: `model` is not in the policy.
        """
        w = self._get(model)
        if w.circuit == "closed":
            return True
        now = self._clock.monotonic()
        self._tick(model, w, now)
        if w.circuit != "half_open":
            return False
        if w.probe_at is None or now - w.probe_at >= self._probe_lease:
            w.probe_at = now
            self._version += 1
            return True
        return False

    async def aallow(self, model: str) -> bool:
        """`allow` for the dispatcher; a shared backend claims the half-open probe here (see `backends`)."""
        return self.allow(model)

    # -- reading ------------------------------------------------------------------------------

    def state(self, model: str) -> CircuitState:
        """The circuit state of `model`: closed, open or half_open (for metrics)."""
        w = self._get(model)
        self._tick(model, w, self._clock.monotonic())
        return w.circuit

    def latency(self, model: str) -> tuple[float, float] | None:
        """Measured (p50, p95) in ms of the successes in the window; None with too few of them."""
        w = self._get(model)
        self._refresh(model, w, self._clock.monotonic())
        if len(w.latencies) < self._min_latency:
            return None
        return w.percentile(50), w.percentile(95)

    def open_circuits(self) -> dict[str, str]:
        """model -> why it is skipped: open circuits, and half-open ones whose probe is out.

        A half-open model with no probe out is left out, so that a decision can pick it and
        `allow()` lets that one request through as the probe.
        """
        now = self._clock.monotonic()
        out: dict[str, str] = {}
        for model, w in self._w.items():
            self._refresh(model, w, now)
            if w.circuit == "open":
                out[model] = f"circuit open: {w.open_reason}; probe in {w.open_until - now:.1f}s"
            elif w.circuit == "half_open" and w.probe_at is not None and now - w.probe_at < self._probe_lease:
                out[model] = f"circuit half-open: probe in flight ({w.open_reason})"
        return out

    def demoted(self) -> dict[str, str]:
        """model -> why it is demoted to the end of plans."""
        now = self._clock.monotonic()
        out: dict[str, str] = {}
        for model, w in self._w.items():
            self._refresh(model, w, now)
            if w.demoted is not None:
                out[model] = w.demoted
        return out

    def latencies(self) -> dict[str, tuple[float, float]]:
        """model -> measured (p50, p95) ms, for the models with enough successes in the window."""
        out: dict[str, tuple[float, float]] = {}
        for model in self._w:
            lat = self.latency(model)
            if lat is not None:
                out[model] = lat
        return out

    def snapshot(self) -> RuntimeState:
        """A `RuntimeState` holding the health facts (open circuits, demotions, latencies).

        One pass over the models; reused until an outcome changes what it shows (a circuit, a
        demotion, a latency pair gone stale: see `_Window.latency_pair`), a probe is granted or
        `SNAPSHOT_MAX_AGE_S` passes (sample expiry and cooldowns are time-driven). The runtime
        adds `unavailable` and `quota_probe` with `dataclasses.replace`.
        """
        now = self._clock.monotonic()
        cached = self._snapshot
        if cached is not None and cached[0] == self._version and now - cached[1] < SNAPSHOT_MAX_AGE_S:
            return cached[2]
        open_: dict[str, str] = {}
        demoted: dict[str, str] = {}
        latency: dict[str, tuple[float, float]] = {}
        for model, w in self._w.items():
            self._refresh(model, w, now)
            if w.circuit == "open":
                open_[model] = f"circuit open: {w.open_reason}; probe in {w.open_until - now:.1f}s"
            elif w.circuit == "half_open" and w.probe_at is not None and now - w.probe_at < self._probe_lease:
                open_[model] = f"circuit half-open: probe in flight ({w.open_reason})"
            if w.demoted is not None:
                demoted[model] = w.demoted
            if len(w.latencies) >= self._min_latency:
                latency[model] = w.latency_pair()
        state = RuntimeState(open_circuits=open_, demoted=demoted, latency_ms=latency)
        self._snapshot = (self._version, now, state)
        return state
