"""Quotas on Redis: the same budgets, refusals and messages as `QuotaManager`, shared by every router.

Each (quota, scope key, window start) bucket is three keys (a rolling window has one bucket per
step, and its scripts read the span's earlier steps too): a hash of counters (requests,
tokens, cost in nano-USD; settled usage plus the estimates in flight), a sorted set of the
reservations in flight scored by their lease expiry, and a hash of their estimates. `reserve`
is one Lua script over every bucket a request touches: it checks them all, then adds to all,
so no two routers can race past a limit. `settle`/`release` is another. A reservation whose
process died before settling expires after `state.reservation_ttl_s`: its estimates are given
back by the next script that touches the bucket, its request stays counted. Buckets expire a
day after their window ends.

`check`/`probe` (what `decide` reads, synchronously) are served from a copy of the buckets this
router has seen, refreshed in the background when older than `probe_max_age_s`; the scripts
are the truth. While Redis is down, `on_failure.quotas` says what happens: `reject` refuses
with `StateUnavailable`, `local` counts in the embedded in-memory ledger of this process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import StateUnavailable
from engine.policy.model import Quota
from engine.runtime.backends.lua import QUOTA_FINISH, QUOTA_READ, QUOTA_RESERVE
from engine.runtime.backends.redis_conn import RedisConn, StateDown
from engine.runtime.clock import Clock
from engine.runtime.quota_rules import QuotaBlock, QuotaContext, Usage, _block, _check_amounts, _Rule, _Target
from engine.runtime.quotas import Bucket, QuotaManager, Reservation

__all__ = ["RedisQuotaManager", "RedisReservation"]

_log = logging.getLogger("engine.state")
_NANO = 1_000_000_000
_KEEP_MS = 86_400_000  # buckets outlive their window by a day, for stats and late settles


def _nano(usd: float) -> int:
    return int(round(usd * _NANO))


@dataclass(frozen=True, slots=True)
class RedisReservation(Reservation):
    """A reservation held in Redis (`local` False) or, while Redis was down, in the local ledger."""

    token: str = ""
    """The reservation's id in Redis: unique across processes."""
    local: Reservation | None = None
    """Set when the reservation was made in the fallback ledger."""


class RedisQuotaManager(QuotaManager):
    """`QuotaManager` whose ledger is one Redis shared by every router.

    Args:
        quotas: the policy's quotas.
        conn: the router's Redis connection.
        clock: wall time picks the calendar window; monotonic time ages the probe copy.
        reservation_ttl_s: lease of an unsettled reservation.
        fail_closed: `on_failure.quotas: reject` (True) or `local` (False).
        probe_max_age_s: how old the probe copy of a bucket may get before it is re-read.

    Only the async forms (`areserve`, `asettle`, `arelease`) exist: a Redis call never blocks the loop.
    """

    def __init__(self, quotas: Sequence[Quota], *, conn: RedisConn, clock: Clock, reservation_ttl_s: float,
                 fail_closed: bool, probe_max_age_s: float = 0.25, signals: Collection[str] = ()) -> None:
        # the embedded in-memory ledger: the rules, windows and probe helpers, and the fallback
        super().__init__(quotas, path=None, clock=clock, signals=signals)
        self._conn = conn
        self._lease_ms = int(reservation_ttl_s * 1000)
        self._fail_closed = fail_closed
        self._probe_age = probe_max_age_s
        self._seen: dict[tuple[str, str, float], tuple[Usage, float]] = {}  # bucket -> (usage, monotonic read)
        self._refreshing: asyncio.Task[None] | None = None
        self._tokens = itertools.count(1)
        self._origin = os.urandom(6).hex()
        self._settling: set[asyncio.Task[None]] = set()  # settlements not yet acknowledged by Redis
        self._done: set[int] = set()  # ids of reservations whose settlement is under way

    # -- keys -----------------------------------------------------------------------------

    def _keys(self, quota: str, scope_key: str, start: float) -> tuple[str, str, str]:
        k = self._conn.key("q", quota, scope_key or "-", str(int(start)))
        return k, k + ":r", k + ":e"

    def _window_keys(self, rule: _Rule, scope_key: str, start: float) -> list[str]:
        """The bucket's keys, then those of the earlier steps of a rolling window."""
        keys = list(self._keys(rule.quota.name, scope_key, start))
        for j in range(1, rule.older + 1):
            keys.extend(self._keys(rule.quota.name, scope_key, start - j * rule.step))
        return keys

    # -- reading (decide) -----------------------------------------------------------------

    def check(self, ctx: QuotaContext, est_tokens: int, est_cost: float) -> QuotaBlock | None:
        """The first applicable quota that could not take this estimate, per the last copy seen."""
        if not self._conn.available():
            return super().check(ctx, est_tokens, est_cost) if not self._fail_closed else None
        now = self._clock.monotonic()
        stale: list[tuple[str, str, float]] = []
        for target in self._targets(ctx):
            rule, key, start, _ = target
            bk = (rule.quota.name, key, start)
            hit = self._seen.get(bk)
            if hit is None or now - hit[1] > self._probe_age:
                stale.append(bk)
            if hit is not None:
                block = _block(target, hit[0], est_tokens, est_cost)
                if block is not None:
                    return block
        if stale:
            self._refresh_later(stale)
        return None

    def _rule_of(self, name: str, scope_key: str) -> _Rule:
        base = self._by_name[name]
        return base.limits_for_key(scope_key) if base.by else base

    def _refresh_later(self, buckets: list[tuple[str, str, float]]) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            return
        try:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(buckets))
        except RuntimeError:
            return  # no loop (explain from sync code): the copy stays as it is

    async def _refresh(self, buckets: list[tuple[str, str, float]]) -> None:
        rules = [self._rule_of(name, key) for name, key, _ in buckets]
        keys = [k for (_, key, start), rule in zip(buckets, rules, strict=True)
                for k in self._window_keys(rule, key, start)]
        try:
            raw = await self._conn.script(QUOTA_READ, keys, [len(buckets), *(r.older for r in rules)])
        except StateDown:
            return
        now = self._clock.monotonic()
        for i, bk in enumerate(buckets):
            self._seen[bk] = (_usage(raw[3 * i:3 * i + 3]), now)

    def usage(self) -> list[dict[str, str | int | float | None]]:
        """The buckets this router has seen in the current windows, as last read from Redis."""
        ts = self._clock.time()
        rows: list[dict[str, str | int | float | None]] = []
        for (name, key, start), (used, _) in sorted(self._seen.items()):
            base = self._by_name[name]
            cur_start, end = self._bounds(base.quota.window, ts)
            if start != cur_start:
                continue
            rule = base.limits_for_key(key) if base.by else base
            req, tok = rule.limit_of("requests"), rule.limit_of("tokens")
            rows.append({"quota": name, "scope_key": key, "window_start": start, "resets_at": end,
                         "requests": used.requests, "tokens": used.tokens, "cost_usd": used.cost_usd,
                         "limit_requests": None if req is None else int(req),
                         "limit_tokens": None if tok is None else int(tok),
                         "limit_cost_usd": rule.limit_of("cost_usd"), "on_exceed": base.quota.on_exceed})
        return rows

    async def aremaining(self, quota_name: str, ctx: QuotaContext) -> dict[str, float]:
        """Room left per limited measure plus `resets_at`, read from Redis now."""
        targets = [t for t in self._targets(ctx) if t[0].quota.name == quota_name]
        rule = targets[0][0] if targets else self._by_name[quota_name]
        if not targets:
            return {}
        _, key, start, end = targets[0]
        raw = await self._conn.script(QUOTA_READ, self._window_keys(rule, key, start), [1, rule.older])
        used = _usage(raw)
        out: dict[str, float] = {m: limit - float(getattr(used, m)) for m, limit in rule.limits}
        out["resets_at"] = end
        return out

    # -- writing (dispatch) ---------------------------------------------------------------

    async def areserve(self, ctx: QuotaContext, est_tokens: int, est_cost: float) -> Reservation:
        """Atomically check every applicable quota in Redis and add this estimate to each.

        Raises:
            QuotaExceeded: some quota has no room; nothing was added.
            StateUnavailable: Redis is down and the policy fails closed.
        """
        _check_amounts(est_tokens, est_cost)
        targets = self._targets(ctx)
        if not targets:
            return RedisReservation(next(self._ids), est_tokens, est_cost, ())
        token = f"{self._origin}-{next(self._tokens)}"
        keys: list[str] = []
        args: list[Any] = [token, est_tokens, _nano(est_cost), self._lease_ms, len(targets)]
        wall = self._clock.time()
        for rule, key, start, end in targets:
            keys.extend(self._window_keys(rule, key, start))
            req, tok, cost = rule.limit_of("requests"), rule.limit_of("tokens"), rule.limit_of("cost_usd")
            # a rolling window's step counts until the whole span has passed over it
            ttl_ms = max(1, int((end + rule.older * rule.step - wall) * 1000)) + _KEEP_MS
            args += [-1 if req is None else int(req), -1 if tok is None else int(tok),
                     -1 if cost is None else _nano(cost), ttl_ms, rule.older]
        try:
            raw = await self._conn.script(QUOTA_RESERVE, keys, args)
        except StateDown as e:
            return self._down(ctx, targets, est_tokens, est_cost, e)
        now = self._clock.monotonic()
        blocked = int(raw[0])
        if blocked:
            target = targets[blocked - 1]
            used = _usage(raw[1:4])
            self._seen[(target[0].quota.name, target[1], target[2])] = (used, now)
            block = _block(target, used, est_tokens, est_cost)
            if block is None:  # rounding to nano-dollars refused what floats admit: name the cost
                rule, key, _, end = target
                block = QuotaBlock(rule.quota.name, rule.quota.on_exceed, key, "cost_usd",
                                   float(rule.limit_of("cost_usd") or 0), used.cost_usd, est_cost, end)
            raise block.error()
        buckets = []
        for i, (rule, key, start, end) in enumerate(targets):
            used = _usage(raw[1 + 3 * i:4 + 3 * i])
            self._seen[(rule.quota.name, key, start)] = (used, now)
            buckets.append(Bucket(rule.quota.name, key, start, end, used))
        return RedisReservation(next(self._ids), est_tokens, est_cost, tuple(buckets), token=token)

    def _down(self, ctx: QuotaContext, targets: list[_Target], est_tokens: int, est_cost: float,
              e: StateDown) -> Reservation:
        if self._fail_closed:
            rule, key, _, _ = targets[0]
            raise StateUnavailable(rule.quota.name, key, str(e), self._clock.time() + self._conn.config.retry_s) from e
        local = self._reserve(ctx, est_tokens, est_cost, wait=True)
        return RedisReservation(next(self._ids), est_tokens, est_cost, local.buckets, local=local)

    async def asettle(self, reservation: Reservation, actual_tokens: int, actual_cost: float) -> None:
        """Replace the estimate with the actual usage in the buckets reserved.

        The answer does not wait for it: the script runs as a task of its own (`aflush` waits for
        them all; the router's close does). Until it lands, the bucket holds the estimate, which is
        never less than the actual usage with worst-case estimates, so admission only errs safe.
        """
        _check_amounts(actual_tokens, actual_cost)
        if not isinstance(reservation, RedisReservation) or reservation.local is not None or not reservation.buckets:
            await self._afinish_redis(reservation, "settle", actual_tokens, actual_cost)
            return
        self._ensure_open(reservation)
        task = asyncio.get_running_loop().create_task(
            self._afinish_redis(reservation, "settle", actual_tokens, actual_cost))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _ensure_open(self, reservation: RedisReservation) -> None:
        # settling twice is the caller's bug: say so now, not in a background task
        if reservation.id in self._done:
            raise ValueError(f"reservation {reservation.id} was already settled or released")
        self._done.add(reservation.id)
        if len(self._done) > 100_000:
            self._done.clear()

    async def aflush(self) -> None:
        """Wait for the settlements still on their way to Redis."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    async def arelease(self, reservation: Reservation) -> None:
        """Give back everything, request included, for a request that never reached a vendor."""
        if isinstance(reservation, RedisReservation) and reservation.local is None and reservation.buckets:
            self._ensure_open(reservation)
        await self._afinish_redis(reservation, "release", 0, 0.0)

    async def _afinish_redis(self, reservation: Reservation, mode: str, tokens: int, cost: float) -> None:
        if not isinstance(reservation, RedisReservation):
            raise TypeError("this reservation was not made by RedisQuotaManager")
        if reservation.local is not None:
            if mode == "settle":
                await super().asettle(reservation.local, tokens, cost)
            else:
                await super().arelease(reservation.local)
            return
        if not reservation.buckets:
            return
        keys = [k for b in reservation.buckets for k in self._keys(b.quota, b.scope_key, b.window_start)]
        args = [reservation.token, mode, reservation.est_tokens, _nano(reservation.est_cost), tokens, _nano(cost)]
        try:
            await self._conn.script(QUOTA_FINISH, keys, args)
        except StateDown as e:
            # the lease will give the estimate back; the actual usage of this request is lost to the
            # ledger (it stays in the decision log), which the warning says
            _log.warning("quota %s not settled (Redis down: %s); its reservation expires in %.0fs",
                         mode, e, self._lease_ms / 1000)
            return
        # keep the probe copy current without a read: move it by this request's correction
        now = self._clock.monotonic()
        for b in reservation.buckets:
            bk = (b.quota, b.scope_key, b.window_start)
            hit = self._seen.get(bk)
            if hit is not None:
                if mode == "settle":
                    moved = hit[0].plus(0, tokens - reservation.est_tokens, cost - reservation.est_cost)
                else:
                    moved = hit[0].plus(-1, -reservation.est_tokens, -reservation.est_cost)
                self._seen[bk] = (moved, hit[1] if hit[1] <= now else now)

    # -- the embedded synchronous forms cannot reach Redis without blocking the loop ------

    def reserve(self, ctx: QuotaContext, est_tokens: int, est_cost: float) -> Reservation:
        """Not available on Redis: use `areserve`."""
        raise TypeError("RedisQuotaManager.reserve would block the event loop; use `await areserve(...)`")

    def settle(self, reservation: Reservation, actual_tokens: int, actual_cost: float) -> None:
        """Not available on Redis: use `asettle`."""
        raise TypeError("RedisQuotaManager.settle would block the event loop; use `await asettle(...)`")

    def release(self, reservation: Reservation) -> None:
        """Not available on Redis: use `arelease`."""
        raise TypeError("RedisQuotaManager.release would block the event loop; use `await arelease(...)`")

    def remaining(self, quota_name: str, ctx: QuotaContext) -> dict[str, float]:
        """Not available on Redis: use `aremaining`."""
        raise TypeError("RedisQuotaManager.remaining would block the event loop; use `await aremaining(...)`")

    def prune(self, keep_s: float = 35 * 86400.0) -> int:
        """Nothing to prune: Redis expires each bucket a day after its window ends."""
        return 0


def _usage(raw: Sequence[Any]) -> Usage:
    return Usage(int(raw[0]), int(raw[1]), int(raw[2]) / _NANO)
