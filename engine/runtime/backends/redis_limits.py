"""Rate limits on Redis: provider/model rpm and tpm, and per-tenant/per-key `limits`, for every router at once.

Each limiter is a sliding-window log in Redis (`lua.RATE_ACQUIRE`): at most its limit in any
window, across all routers, checked and taken for all of a model's limiters (its own and its
provider's) in one atomic script, so one round trip per attempt. When a limiter is full the
script says how long until there is room: a wait that ends before the request's deadline is
slept and tried again; one past it makes the model unavailable (`LimitWouldExceedDeadline`),
as in the embedded limiter. Concurrency stays per process (it bounds this process's open
connections).

While Redis is down, `on_failure.limits` says what happens: `local` uses the embedded
per-process limiters (logged once per outage), `reject` makes every rate-limited model unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from itertools import count

from engine.errors import RateLimitExceeded
from engine.policy.model import Model, Provider
from engine.runtime.backends.lua import RATE_ACQUIRE
from engine.runtime.backends.redis_conn import RedisConn, StateDown
from engine.runtime.clock import Clock
from engine.runtime.limits import LimitWouldExceedDeadline, Permit, RateLimits, _Gates
from engine.runtime.scoped_limits import ScopedLimits

__all__ = ["RedisRateLimits", "RedisScopedLimits"]

_log = logging.getLogger("engine.state")


class _Ids:
    """Members of the window logs: unique across processes."""

    def __init__(self) -> None:
        self._origin = os.urandom(6).hex()
        self._n = count(1)

    def next(self) -> str:
        return f"{self._origin}{next(self._n):x}"


class RedisRateLimits(RateLimits):
    """`RateLimits` whose rpm/tpm windows live in Redis.

    Args:
        providers, models, period_s: as `RateLimits`.
        conn: the router's Redis connection.
        fallback_local: `on_failure.limits: local` (True) or `reject` (False).
    """

    def __init__(self, providers: Mapping[str, Provider], models: Mapping[str, Model], *, conn: RedisConn,
                 fallback_local: bool, clock: Clock | None = None, period_s: float = 60.0) -> None:
        super().__init__(providers, models, clock=clock, period_s=period_s)
        self._conn = conn
        self._fallback_local = fallback_local
        self._period_ms = int(period_s * 1000)
        self._ids = _Ids()
        # model -> loop time before which its last refusal said there is no room: what the
        # synchronous `unavailable` (decide's view) reports; the script is the truth
        self._blocked: dict[str, tuple[float, str, float]] = {}  # model -> (free at, limit, seen at)
        self._warned = False

    def _script_args(self, gates: _Gates, tokens: int) -> tuple[list[str], list[object]]:
        keys: list[str] = []
        args: list[object] = [self._ids.next(), self._period_ms]
        for rate in gates.rates:
            k = self._conn.key("rl", rate.label.replace(" ", ":"))
            keys += [k, k + ":n"]
            args += [int(rate.limiter.max_rate), int(rate.amount(tokens))]
        return keys, args

    def wait_estimate(self, model: str, tokens: int) -> float:
        """Seconds until the last refusal seen for `model` clears (Redis is asked on `acquire`)."""
        self._for(model)
        if not self._conn.available():
            return super().wait_estimate(model, tokens) if self._fallback_local else 0.0
        until = self._blocked.get(model)
        return 0.0 if until is None else max(until[0] - _loop_time(), 0.0)

    def unavailable(self, tokens_by_model: Mapping[str, int], deadline: float) -> dict[str, str]:
        """Models whose last refusal in this router says they cannot take a request before `deadline`."""
        if not self._conn.available():
            if self._fallback_local:
                return super().unavailable(tokens_by_model, deadline)
            return {m: "rate limits cannot be checked: the shared state store is down" for m in tokens_by_model
                    if self._for(m).rates}
        now = _loop_time()
        out: dict[str, str] = {}
        for model in tokens_by_model:
            until = self._blocked.get(model)
            if until is not None and until[0] > now and until[0] > deadline:
                out[model] = f"rate limit ({until[1]}) would wait {until[0] - now:.2f}s, past the deadline"
        return out

    async def acquire(self, model: str, tokens: int, *, deadline: float) -> Permit:
        """Wait for room under every limit of `model` and its provider, in Redis; see `RateLimits.acquire`.

        Raises:
            LimitWouldExceedDeadline: room would come after `deadline` (nothing consumed), or Redis
                is down and the policy says `on_failure.limits: reject`.
        """
        gates = self._for(model)
        if not gates.rates:
            return await super().acquire(model, tokens, deadline=deadline)
        if not self._conn.available():
            return await self._down(model, tokens, deadline, "Redis is down")
        # concurrency first, as the embedded limiter does: those slots can be given back
        permit = await super().acquire_slots(model, deadline=deadline)
        loop = asyncio.get_running_loop()
        try:
            while True:
                keys, args = self._script_args(gates, tokens)
                asked_at = loop.time()
                try:
                    raw = await self._conn.script(RATE_ACQUIRE, keys, args)
                except StateDown as e:
                    permit.release()
                    return await self._down(model, tokens, deadline, str(e))
                wait_ms = int(raw[0])
                if wait_ms == 0:
                    # concurrent calls answer out of order: only a grant asked for after the
                    # refusal was seen says the window has room again
                    blocked = self._blocked.get(model)
                    if blocked is not None and blocked[2] <= asked_at:
                        del self._blocked[model]
                    return permit
                wait, label = wait_ms / 1000, gates.rates[int(raw[1]) - 1].label
                self._blocked[model] = (loop.time() + wait, label, loop.time())
                if loop.time() + wait > deadline:
                    raise LimitWouldExceedDeadline(model, wait, label)
                await asyncio.sleep(wait)
        except BaseException:
            permit.release()
            raise

    async def _down(self, model: str, tokens: int, deadline: float, why: str) -> Permit:
        if not self._fallback_local:
            raise LimitWouldExceedDeadline(model, float("inf"), f"shared limits unavailable: {why}")
        if not self._warned:
            self._warned = True
            _log.warning("rate limits: Redis unavailable (%s); using this process's own limiters until it is back",
                         why)
        permit = await super().acquire(model, tokens, deadline=deadline)
        if self._conn.up:
            self._warned = False
        return permit


class RedisScopedLimits(ScopedLimits):
    """`ScopedLimits` whose windows live in Redis; while Redis is down they count in this process."""

    def __init__(self, limits: ScopedLimits, *, conn: RedisConn) -> None:
        super().__init__(limits.limits, clock=limits._clock, period_s=limits.period_s)
        self._conn = conn
        self._ids = _Ids()

    async def admit(self, tenant: str | None, key: str | None, tokens: int) -> None:
        """Count one request in Redis against every applicable entry, or refuse it having counted nothing.

        Raises:
            RateLimitExceeded: some entry has no room now.
        """
        meters = self.meters(tenant, key, tokens)
        if not meters:
            return
        if self._conn.available():
            keys: list[str] = []
            args: list[object] = [self._ids.next(), int(self.period_s * 1000)]
            for m in meters:
                k = self._conn.key("sl", m.limit, m.scope_key, m.measure)
                keys += [k, k + ":n"]
                args += [m.capacity, m.amount]
            try:
                raw = await self._conn.script(RATE_ACQUIRE, keys, args)
            except StateDown:
                pass  # counted locally below, as the rate limits of models are
            else:
                if int(raw[0]):
                    m = meters[int(raw[1]) - 1]
                    raise RateLimitExceeded(m.limit, m.scope_key, m.measure, int(raw[0]) / 1000)
                return
        self.admit_local(meters)


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
