"""Per-tenant and per-key rate limits (the policy's top-level `limits:`).

Unlike provider and model limits, which make a model unavailable and move the plan on, these
limit the *caller*: a request over one is refused before any model is tried, with
`RateLimitExceeded` (HTTP 429 `rate_limit_exceeded` and a Retry-After), distinct from a quota's
`insufficient_quota`. Each entry is a sliding window: at most `rpm` requests and `tpm` tokens
(prompt estimate + max_tokens) in any `period_s` (60 s). Refused requests consume nothing.

This is the embedded form, exact within one process; `backends.redis_limits.RedisScopedLimits`
keeps the same windows in Redis for every router.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import RateLimitExceeded
from engine.policy.model import ScopedLimit
from engine.runtime.clock import Clock

__all__ = ["Meter", "ScopedLimits"]

_MAX_WINDOWS = 10_000


@dataclass(frozen=True, slots=True)
class Meter:
    """One window to pass: which entry, whom it counts, what it meters and how much."""

    limit: str
    scope_key: str
    measure: str  # rpm | tpm
    capacity: int
    amount: int


class _Window:
    """A sliding-window log of (monotonic time, amount) with a running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def wait(self, now: float, period: float, capacity: int, amount: int) -> float:
        entries = self.entries
        while entries and entries[0][0] <= now - period:
            self.total -= entries.popleft()[1]
        need = self.total + amount - capacity
        if need <= 0:
            return 0.0
        freed = 0
        for ts, n in entries:
            freed += n
            if freed >= need:
                return max(ts + period - now, 1e-3)
        return period


class ScopedLimits:
    """The `limits:` entries of one policy, counted in this process.

    Args:
        limits: the policy's scoped limits.
        clock: monotonic time drives the windows.
        period_s: the window; only tests shorten it.
    """

    def __init__(self, limits: Sequence[ScopedLimit], *, clock: Clock, period_s: float = 60.0) -> None:
        self.limits = tuple(limits)
        self._clock = clock
        self.period_s = period_s
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def meters(self, tenant: str | None, key: str | None, tokens: int) -> list[Meter]:
        """The windows a request of `tokens` from (tenant, key) must pass, in policy order."""
        who = {"tenant": tenant, "key": key}
        out: list[Meter] = []
        for lim in self.limits:
            values = [who[f] for f in lim.scope]
            if any(v is None for v in values):
                continue
            scope_key = ",".join(f"{f}={v}" for f, v in zip(lim.scope, values, strict=True))
            if lim.rpm:
                out.append(Meter(lim.name, scope_key, "rpm", lim.rpm, 1))
            if lim.tpm:
                # a request bigger than the whole window passes once the window is empty
                out.append(Meter(lim.name, scope_key, "tpm", lim.tpm, min(max(tokens, 0), lim.tpm)))
        return out

    async def admit(self, tenant: str | None, key: str | None, tokens: int) -> None:
        """Count one request against every applicable entry, or refuse it having counted nothing.

        Raises:
            RateLimitExceeded: some entry has no room now; names it and when to retry.
        """
        self.admit_local(self.meters(tenant, key, tokens))

    def admit_local(self, meters: Sequence[Meter]) -> None:
        """`admit` on already computed meters, in this process's windows."""
        if not meters:
            return
        now = self._clock.monotonic()
        if len(self._windows) > _MAX_WINDOWS:
            # tenants and keys are unbounded: forget the windows that hold nothing any more
            cutoff = now - self.period_s
            self._windows = {k: w for k, w in self._windows.items() if w.entries and w.entries[-1][0] > cutoff}
        windows = [self._windows.setdefault((m.limit, m.scope_key, m.measure), _Window()) for m in meters]
        worst, which = 0.0, None
        for m, w in zip(meters, windows, strict=True):
            wait = w.wait(now, self.period_s, m.capacity, m.amount)
            if wait > worst:
                worst, which = wait, m
        if which is not None:
            raise RateLimitExceeded(which.limit, which.scope_key, which.measure, worst)
        for m, w in zip(meters, windows, strict=True):
            w.entries.append((now, m.amount))
            w.total += m.amount
