"""Health on Redis: outcome windows and circuits shared by every router, one half-open probe for all.

Outcomes are counted locally and sent in one script call (`lua.HEALTH_SYNC`) every `SYNC_S`,
batched whatever the request rate (one call per router per interval, never one per request); the
script adds the counts to the model's shared window (1 s buckets), opens the circuit when the
error rate over all routers crosses the threshold, and returns every model's circuit. So an
outage seen by one router opens the circuit in all of them within about `SYNC_S`. The half-open
probe is claimed atomically (`lua.HEALTH_CLAIM`): one router sends it, the others keep skipping
the model until its outcome closes or re-opens the circuit.

Latency percentiles and demotion stay per router (the embedded `HealthTracker` this class
extends, fed by the same outcomes); so does the circuit while Redis is down: then the embedded
tracker's own circuit decides, as in a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from engine.policy.model import HealthConfig, Model
from engine.routing.state import RuntimeState
from engine.runtime.backends.lua import HEALTH_CLAIM, HEALTH_SYNC
from engine.runtime.backends.redis_conn import RedisConn, StateDown
from engine.runtime.clock import Clock
from engine.runtime.health import CircuitState, HealthEvent, HealthTracker

__all__ = ["SYNC_S", "RedisHealth"]

SYNC_S = 0.2
"""Longest time between two syncs of the shared circuits while nothing is recorded."""

_log = logging.getLogger("engine.state")
_CIRCUIT_EVENTS = frozenset({"circuit_open", "circuit_half_open", "circuit_closed"})


class _Shared:
    __slots__ = ("open_until", "probe_until", "reason", "state")

    def __init__(self, state: CircuitState, open_until: float, probe_until: float, reason: str) -> None:
        self.state: CircuitState = state
        self.open_until = open_until  # local monotonic time
        self.probe_until = probe_until
        self.reason = reason


class RedisHealth(HealthTracker):
    """`HealthTracker` whose circuits are shared through Redis (see the module docstring).

    Args:
        config, models, clock, on_event: as `HealthTracker`.
        conn: the router's Redis connection.
    """

    def __init__(self, config: HealthConfig, models: Mapping[str, Model], *, clock: Clock, conn: RedisConn,
                 on_event: Callable[[HealthEvent], None] | None = None) -> None:
        self._outer_event = on_event
        super().__init__(config, models, clock=clock, on_event=self._local_event)
        self._conn = conn
        self._names = tuple(models)
        self._shared: dict[str, _Shared] = {}
        self._counts: dict[str, list[int]] = {}  # model -> [successes, failures] not yet sent
        self._probe_out: dict[str, str] = {}  # model -> outcome of this router's probe, not yet sent
        self._probing: set[str] = set()  # models whose probe this router holds
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- events ---------------------------------------------------------------------------

    def _shared_ok(self) -> bool:
        return self._conn.up is True and bool(self._shared)

    def _local_event(self, event: HealthEvent) -> None:
        # while the shared circuit rules, the embedded one's transitions are not the model's
        if event.kind in _CIRCUIT_EVENTS and self._shared_ok():
            return
        if self._outer_event is not None:
            self._outer_event(event)

    def _emit_shared(self, kind: str, model: str, detail: str) -> None:
        if self._outer_event is not None:
            self._outer_event(HealthEvent(self._clock.time(), kind, model, detail))  # type: ignore[arg-type]

    # -- background sync ------------------------------------------------------------------

    def _ensure(self) -> None:
        # outcomes are batched: the loop sends them every SYNC_S, not one script per request
        if self._task is not None and not self._task.done() or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SYNC_S)
            self._wake.clear()
            try:
                await self.sync()
            except StateDown:
                pass  # counted in the connection's status; the embedded circuits decide meanwhile
            except Exception:  # the loop must survive anything, or circuits stop being shared
                _log.exception("health: shared circuit sync failed")

    async def sync(self) -> None:
        """Send the outcomes counted since the last sync and read every shared circuit back.

        Raises:
            StateDown: Redis did not answer; the counts are kept for the next sync.
        """
        counts, probes = self._counts, self._probe_out
        self._counts, self._probe_out = {}, {}
        cfg = self.config
        keys: list[str] = []
        args: list[object] = [int(self._window_s * 1000), self._min, cfg.open_circuit.error_rate,
                              int(self._cooldown * 1000)]
        for name in self._names:
            k = self._conn.key("h", name)
            keys += [k, k + ":w"]
            ok, fail = counts.get(name, (0, 0))
            args += [ok, fail, probes.get(name, "-")]
        try:
            raw = await self._conn.script(HEALTH_SYNC, keys, args)
        except BaseException:
            # not sent (Redis down, or we were cancelled): keep the outcomes for the next sync
            for name, (ok, fail) in counts.items():
                mine = self._counts.setdefault(name, [0, 0])
                mine[0] += ok
                mine[1] += fail
            for name, outcome in probes.items():
                self._probe_out.setdefault(name, outcome)
            raise
        now = self._clock.monotonic()
        for name, row in zip(self._names, raw, strict=True):
            state = _decode(row[0])
            reason = _decode(row[3])
            new = _Shared(state, now + int(row[1]) / 1000, now + int(row[2]) / 1000, reason)  # type: ignore[arg-type]
            old = self._shared.get(name)
            self._shared[name] = new
            if name in probes:
                self._probing.discard(name)
            if old is not None and old.state != new.state:
                kind = {"open": "circuit_open", "half_open": "circuit_half_open", "closed": "circuit_closed"}[state]
                self._emit_shared(kind, name, f"shared circuit: {reason}")

    async def aclose(self) -> None:
        """Stop the background sync, sending what is left when Redis is up."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            if self._wake is not None:
                self._wake.set()  # the loop ends after the sync it is in, if any
            try:
                await asyncio.wait_for(asyncio.shield(task), self._conn.timeout_s * 2)
            except (asyncio.TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if (self._counts or self._probe_out) and self._conn.available():
            with contextlib.suppress(StateDown):
                await self.sync()

    # -- feeding --------------------------------------------------------------------------

    def record(self, model: str, *, ok: bool, latency_ms: float, error_class: str | None = None) -> None:
        """Record one attempt: in this router's window and, at the next sync, in the shared one."""
        super().record(model, ok=ok, latency_ms=latency_ms, error_class=error_class)
        failure = None if ok else (error_class or "Error")
        neutral = failure is not None and failure in self._neutral
        if model in self._probing:
            self._probe_out[model] = "neutral" if neutral else ("ok" if failure is None else "fail")
        elif not neutral:
            c = self._counts.setdefault(model, [0, 0])
            c[0 if failure is None else 1] += 1
        self._ensure()

    # -- gate -----------------------------------------------------------------------------

    def allow(self, model: str) -> bool:
        """Whether a request may go to `model` by the last shared circuit seen (no probe is claimed here)."""
        self._ensure()
        s = self._shared.get(model)
        if not self._shared_ok() or s is None:
            return super().allow(model)
        return s.state == "closed"

    async def aallow(self, model: str) -> bool:
        """`allow`, claiming the half-open probe in Redis so that only one router sends it."""
        self._ensure()
        s = self._shared.get(model)
        if not self._shared_ok() or s is None:
            return super().allow(model)
        if s.state == "closed":
            return True
        now = self._clock.monotonic()
        if s.state == "open" and now < s.open_until or s.state == "half_open" and now < s.probe_until:
            return False
        try:
            got = await self._conn.script(HEALTH_CLAIM, [self._conn.key("h", model)], [int(self._probe_lease * 1000)])
        except StateDown:
            return super().allow(model)
        if int(got):
            self._probing.add(model)
            s.state, s.probe_until = "half_open", now + self._probe_lease
            return True
        return False

    # -- reading --------------------------------------------------------------------------

    def state(self, model: str) -> CircuitState:
        """The shared circuit of `model` (this router's own while Redis is down)."""
        s = self._shared.get(model)
        if not self._shared_ok() or s is None:
            return super().state(model)
        if s.state == "open" and self._clock.monotonic() >= s.open_until:
            return "half_open"
        return s.state

    def open_circuits(self) -> dict[str, str]:
        """model -> why it is skipped, from the shared circuits."""
        if not self._shared_ok():
            return super().open_circuits()
        now = self._clock.monotonic()
        out: dict[str, str] = {}
        for model, s in self._shared.items():
            if s.state == "open" and now < s.open_until:
                out[model] = f"circuit open (shared): {s.reason}; probe in {s.open_until - now:.1f}s"
            elif s.state in ("open", "half_open") and now < s.probe_until:
                out[model] = f"circuit half-open (shared): probe in flight ({s.reason})"
        return out

    def snapshot(self) -> RuntimeState:
        """Demotions and latencies of this router, circuits of all of them."""
        self._ensure()
        base = super().snapshot()
        if not self._shared_ok():
            return base
        return RuntimeState(open_circuits=self.open_circuits(), demoted=base.demoted, latency_ms=base.latency_ms)


def _decode(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
