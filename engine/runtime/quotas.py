"""Quota budgets over calendar or rolling windows (`windows`), kept in SQLite so that several processes share them.

`decide` calls `probe` (read-only, served from an in-memory copy of the current window) to drop
models a quota cannot fit; the runtime calls `reserve` before dispatch and `settle` or `release`
after it.

Accounting: one row per (quota, scope key, window start) holds settled actual usage plus the
estimates of requests still in flight. `reserve` reads every applicable row, checks every limit
and adds its estimate inside one `BEGIN IMMEDIATE` transaction, so the ledger never passes a limit
at admission, whatever the number of processes. A total can still end above a limit when a
request's actual usage exceeds its estimate: `settle` records what was really spent, by at most
the overrun of the requests in flight at that moment. With worst-case estimates (prompt tokens +
max_tokens, as DESIGN.md prescribes) that overrun is zero. The request count never overshoots.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engine.policy.model import Quota, Window
from engine.policy.quota_when import QuotaConditions
from engine.runtime.clock import Clock
from engine.runtime.quota_rules import (
    _COST_DIGITS,
    SCOPE_FIELDS,
    QuotaBlock,
    QuotaContext,
    Usage,
    _add,
    _block,
    _check_amounts,
    _compile,
    _int,
    _Rule,
    _scope_key,
    _Target,
)
from engine.runtime.windows import window_bounds

__all__ = [
    "SCOPE_FIELDS",
    "Bucket",
    "QuotaBlock",
    "QuotaContext",
    "QuotaManager",
    "Reservation",
    "Usage",
    "window_bounds",
]

_T = TypeVar("_T")
_CACHE_MAX = 8192  # probe cache entries; cleared wholesale when exceeded (the db is the truth)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_usage (
    quota TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    window_start REAL NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (quota, scope_key, window_start)
)
"""
_SELECT = "SELECT requests, tokens, cost_usd FROM quota_usage WHERE quota = ? AND scope_key = ? AND window_start = ?"
_UPSERT = (
    "INSERT INTO quota_usage (quota, scope_key, window_start, requests, tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (quota, scope_key, window_start) DO UPDATE SET "
    "requests = excluded.requests, tokens = excluded.tokens, cost_usd = excluded.cost_usd"
)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One ledger row a reservation added to."""

    quota: str
    scope_key: str
    window_start: float
    resets_at: float
    admitted: Usage
    """The row's counters right after this reservation was added (read inside the same transaction)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """An admitted estimate; settle or release it exactly once."""

    id: int
    est_tokens: int
    est_cost: float
    buckets: tuple[Bucket, ...]



class _Busy(Exception):
    """The non-waiting fast path found the write lock taken."""


def _read(db: sqlite3.Connection, quota: str, key: str, start: float) -> Usage:
    row = db.execute(_SELECT, (quota, key, start)).fetchone()
    return Usage(int(row[0]), int(row[1]), float(row[2])) if row else Usage()


def _enable_wal(db: sqlite3.Connection) -> None:
    # Switching a file to WAL needs an exclusive lock, and SQLite answers "locked" at once, without
    # its busy handler, when another process is doing the same; wait for that one, then look again.
    for _ in range(100):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            db.execute("BEGIN IMMEDIATE")  # waits (busy handler) until the other connection is done
            db.execute("ROLLBACK")
    raise sqlite3.OperationalError("could not switch the quota database to WAL mode: it stays locked")


def _connect(path: str, busy_ms: int) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves
    return sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)


class QuotaManager:
    """Checks, reserves and settles quota usage.

    Args:
        quotas: the policy's quotas.
        path: SQLite file shared by every process of the deployment (may be the decision log's
            file), or None for a private in-memory database.
        clock: where wall time (windows) and monotonic time (probe cache age) come from.
        probe_max_age_s: with a shared file, how old a cached row may be before `probe` reads it
            again (other processes' writes are invisible until then). Ignored in memory, where
            this object makes every write and the cache is exact.
        busy_timeout_ms: how long a write waits for another process's transaction.
        signals: the policy's signal names, which quota `when` expressions may read.

    Attributes:
        downgrade_quotas: names of the quotas whose policy says `on_exceed: downgrade`.
    """

    def __init__(
        self,
        quotas: Sequence[Quota],
        *,
        path: str | Path | None,
        clock: Clock,
        probe_max_age_s: float = 0.5,
        busy_timeout_ms: int = 10_000,
        signals: Collection[str] = (),
    ) -> None:
        self._rules = tuple(_compile(q) for q in quotas)
        self._by_name = {r.quota.name: r for r in self._rules}
        if len(self._by_name) != len(self._rules):
            raise ValueError("quota names must be unique")
        self.downgrade_quotas = frozenset(r.quota.name for r in self._rules if r.quota.on_exceed == "downgrade")
        self._whens = QuotaConditions(quotas, signals)
        self.conditional = bool(self._whens)
        """Whether some quota has a `when` (callers then pass `skipped(...)` in their contexts)."""
        self._clock = clock
        self._busy_ms = busy_timeout_ms
        self._shared = path is not None and str(path) != ":memory:"
        self._lock = threading.Lock()  # one transaction at a time on the write connection
        self._windows: dict[str, tuple[float, float]] = {}  # window kind -> bounds last computed
        # (quota, scope key, window start) -> (usage, monotonic time read); tuples are replaced,
        # never mutated, so a worker thread's update and a probe on the loop never see half a row
        self._cache: dict[tuple[str, str, float], tuple[Usage, float]] = {}
        self._keyed: dict[QuotaContext, tuple[tuple[_Rule, str], ...]] = {}  # ctx -> applicable rules, keys
        # rolling windows: (quota, scope key) -> (current step start, usage of the earlier steps, monotonic read)
        self._older_cache: dict[tuple[str, str], tuple[float, Usage, float]] = {}
        self._pending: list[tuple[tuple[str, str, float], Usage]] = []  # rows written by the open transaction
        self._open: set[int] = set()  # reservations not yet settled or released
        self._ids = itertools.count(1)
        if self._shared:
            self._max_age = probe_max_age_s
            self._db = _connect(str(path), busy_timeout_ms)
            _enable_wal(self._db)
            # WAL + NORMAL: a commit costs no fsync; a power cut may lose the last few, never corrupts
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._transact(lambda db: db.execute(_SCHEMA), wait=True)
            # probes read through their own connection: WAL readers never wait for a writer
            self._reader = _connect(str(path), busy_timeout_ms)
            self._reader.execute("PRAGMA query_only=1")
            self._read_lock = threading.Lock()
        else:
            self._max_age = math.inf
            self._db = _connect(":memory:", busy_timeout_ms)
            self._db.execute(_SCHEMA)
            self._reader, self._read_lock = self._db, self._lock

    # -- reading ------------------------------------------------------------------------------

    def skipped(self, env: Mapping[str, Any]) -> frozenset[str]:
        """The conditional quotas that do not apply to a request with these features (`Features.env()`)."""
        return self._whens.skipped(env)

    def check(self, ctx: QuotaContext, est_tokens: int, est_cost: float) -> QuotaBlock | None:
        """The first applicable quota (policy order) that could not take this estimate, or None.

        Read-only and cheap: rows come from memory, re-read only when older than the staleness bound.
        """
        now = self._clock.monotonic()
        for target in self._targets(ctx):
            rule, key, start, _ = target
            cache_key = (rule.quota.name, key, start)
            hit = self._cache.get(cache_key)
            if hit is None or now - hit[1] > self._max_age:
                # remembered under the lock: in memory this lock is the write lock, and a read
                # stored after a concurrent write would make the (exact) cache stale
                with self._read_lock:
                    used = _read(self._reader, *cache_key)
                    self._remember(cache_key, used, now)
            else:
                used = hit[0]
            if rule.older:
                with self._read_lock:
                    used = _add(used, self._older(self._reader, rule, key, start, now))
            block = _block(target, used, est_tokens, est_cost)
            if block is not None:
                return block
        return None

    def probe(self, ctx: QuotaContext, est_tokens: int, est_cost: float) -> str | None:
        """Why reserving this estimate would exceed a quota, or None if every quota has room."""
        block = self.check(ctx, est_tokens, est_cost)
        return None if block is None else block.reason

    def probe_fn(
        self, *, tenant: str | None, key: str | None, provider_of: Mapping[str, str]
    ) -> Callable[[str, int, float], str | None]:
        """A `RuntimeState.quota_probe` for one request: (model, est tokens, est cost) -> reason."""

        def probe(model: str, est_tokens: int, est_cost: float) -> str | None:
            return self.probe(QuotaContext(tenant, key, model, provider_of[model]), est_tokens, est_cost)

        return probe

    def usage(self) -> list[dict[str, str | int | float | None]]:
        """Every row of the current windows, with its limits, for stats and metrics."""
        ts = self._clock.time()
        rows: list[dict[str, str | int | float | None]] = []
        with self._read_lock:
            for rule in self._rules:
                start, end = self._bounds(rule.quota.window, ts)
                # a rolling window's usage is the sum of its steps
                first = start - rule.older * rule.step - rule.step / 2 if rule.older else start
                cursor = self._reader.execute(
                    "SELECT scope_key, SUM(requests), SUM(tokens), SUM(cost_usd) FROM quota_usage "
                    "WHERE quota = ? AND window_start >= ? AND window_start <= ? GROUP BY scope_key ORDER BY scope_key",
                    (rule.quota.name, first, start),
                )
                for scope_key, requests, tokens, cost in cursor:
                    lim = rule.limits_for_key(scope_key) if rule.by else rule
                    rows.append(
                        {
                            "quota": rule.quota.name,
                            "scope_key": scope_key,
                            "window_start": start,
                            "resets_at": end,
                            "requests": requests,
                            "tokens": tokens,
                            "cost_usd": cost,
                            "limit_requests": _int(lim.limit_of("requests")),
                            "limit_tokens": _int(lim.limit_of("tokens")),
                            "limit_cost_usd": lim.limit_of("cost_usd"),
                            "on_exceed": rule.quota.on_exceed,
                        }
                    )
        return rows

    def remaining(self, quota_name: str, ctx: QuotaContext) -> dict[str, float]:
        """Room left per limited measure plus `resets_at`; empty when the quota does not apply to `ctx`.

        Raises:
            KeyError: no quota has this name.
        """
        picked = self._by_name[quota_name].pick(ctx)
        if picked is None:
            return {}
        rule = picked
        key = _scope_key(rule.fields, ctx)
        if key is None:
            return {}
        start, end = self._bounds(rule.quota.window, self._clock.time())
        with self._read_lock:
            used = _read(self._reader, quota_name, key, start)
            if rule.older:
                used = _add(used, self._older(self._reader, rule, key, start, self._clock.monotonic()))
        out: dict[str, float] = {m: limit - float(getattr(used, m)) for m, limit in rule.limits}
        out["resets_at"] = end
        return out

    # -- writing ------------------------------------------------------------------------------

    def reserve(self, ctx: QuotaContext, est_tokens: int, est_cost: float) -> Reservation:
        """Atomically check every applicable quota and add 1 request, `est_tokens` and `est_cost` to each.

        Raises:
            QuotaExceeded: some quota has no room (for `reject` and `downgrade` alike); nothing was added.
            ValueError: a negative estimate.
        """
        return self._reserve(ctx, est_tokens, est_cost, wait=True)

    def settle(self, reservation: Reservation, actual_tokens: int, actual_cost: float) -> None:
        """Replace the estimate with the actual usage, in the buckets reserved (even after a rollover).

        A failed vendor call is settled too (it keeps its request count), possibly with 0 tokens.
        """
        _check_amounts(actual_tokens, actual_cost)
        deltas = (0, actual_tokens - reservation.est_tokens, actual_cost - reservation.est_cost)
        self._finish(reservation, deltas, wait=True)

    def release(self, reservation: Reservation) -> None:
        """Give back everything, request included, for a request that never reached a vendor."""
        self._finish(reservation, (-1, -reservation.est_tokens, -reservation.est_cost), wait=True)

    # A shared file can make a write wait for another process (up to busy_timeout), which must not
    # stall the event loop; so the async forms first try without waiting and move to a worker
    # thread only when the lock is taken. In memory nothing ever waits, so they run inline.

    async def areserve(self, ctx: QuotaContext, est_tokens: int, est_cost: float) -> Reservation:
        """`reserve` that never blocks the event loop on another process's transaction."""
        if self._shared:
            try:
                return self._reserve(ctx, est_tokens, est_cost, wait=False)
            except _Busy:
                return await asyncio.to_thread(self._reserve, ctx, est_tokens, est_cost, wait=True)
        return self._reserve(ctx, est_tokens, est_cost, wait=True)

    async def asettle(self, reservation: Reservation, actual_tokens: int, actual_cost: float) -> None:
        """`settle` that never blocks the event loop on another process's transaction."""
        _check_amounts(actual_tokens, actual_cost)
        deltas = (0, actual_tokens - reservation.est_tokens, actual_cost - reservation.est_cost)
        await self._afinish(reservation, deltas)

    async def arelease(self, reservation: Reservation) -> None:
        """`release` that never blocks the event loop on another process's transaction."""
        await self._afinish(reservation, (-1, -reservation.est_tokens, -reservation.est_cost))

    def prune(self, keep_s: float = 35 * 86400.0) -> int:
        """Delete rows of windows that started more than `keep_s` before the current one; returns the count."""
        ts = self._clock.time()
        cutoffs = [(r.quota.name, self._bounds(r.quota.window, ts)[0] - keep_s) for r in self._rules]

        def body(db: sqlite3.Connection) -> int:
            sql = "DELETE FROM quota_usage WHERE quota = ? AND window_start < ?"
            return sum(db.execute(sql, cutoff).rowcount for cutoff in cutoffs)

        deleted = self._transact(body, wait=True)
        self._cache.clear()
        return deleted

    def close(self) -> None:
        """Close the database connections."""
        with self._lock:
            self._db.close()
            if self._reader is not self._db:
                self._reader.close()

    # -- internals ----------------------------------------------------------------------------

    def _bounds(self, window: Window, ts: float) -> tuple[float, float]:
        bounds = self._windows.get(window)
        if bounds is None or not bounds[0] <= ts < bounds[1]:
            bounds = self._windows[window] = window_bounds(window, ts)
        return bounds

    def _targets(self, ctx: QuotaContext) -> list[_Target]:
        keyed = self._keyed.get(ctx)
        if keyed is None:
            if len(self._keyed) >= _CACHE_MAX:
                self._keyed.clear()
            keyed = self._keyed[ctx] = tuple(
                (rule, key) for base in self._rules if base.quota.name not in ctx.skip
                and (rule := base.pick(ctx)) is not None and (key := _scope_key(rule.fields, ctx)) is not None
            )
        ts = self._clock.time()
        return [(rule, key, *self._bounds(rule.quota.window, ts)) for rule, key in keyed]

    def _current(self, db: sqlite3.Connection, row_key: tuple[str, str, float], now: float) -> Usage:
        """A row's counters, inside a write transaction."""
        if not self._shared:
            # in memory every write goes through this object, so the cache is exact
            hit = self._cache.get(row_key)
            if hit is not None:
                return hit[0]
        used = _read(db, *row_key)
        # a fresh read is worth keeping even when the caller then refuses: probe wants it
        self._remember(row_key, used, now)
        return used

    def _remember(self, cache_key: tuple[str, str, float], used: Usage, now: float) -> None:
        if len(self._cache) >= _CACHE_MAX and cache_key not in self._cache:
            self._cache.clear()
        self._cache[cache_key] = (used, now)

    def _reserve(self, ctx: QuotaContext, est_tokens: int, est_cost: float, *, wait: bool) -> Reservation:
        _check_amounts(est_tokens, est_cost)
        targets = [((t[0].quota.name, t[1], t[2]), t) for t in self._targets(ctx)]

        def body(db: sqlite3.Connection) -> list[Usage]:
            now = self._clock.monotonic()
            olds = []
            for row_key, target in targets:
                used = self._current(db, row_key, now)
                rule, key, start, _ = target
                # a rolling window checks the whole span; the reservation goes to the current step
                seen = _add(used, self._older(db, rule, key, start, now)) if rule.older else used
                block = _block(target, seen, est_tokens, est_cost)
                if block is not None:
                    raise block.error()  # nothing written yet: every check precedes every write
                olds.append(used)
            return [
                self._write(db, row_key, old.plus(1, est_tokens, est_cost))
                for (row_key, _), old in zip(targets, olds, strict=True)
            ]

        news = self._transact(body, wait=wait) if targets else []
        buckets = tuple(Bucket(*row_key, target[3], new) for (row_key, target), new in zip(targets, news, strict=True))
        reservation = Reservation(next(self._ids), est_tokens, est_cost, buckets)
        self._open.add(reservation.id)
        return reservation

    async def _afinish(self, reservation: Reservation, deltas: tuple[int, int, float]) -> None:
        if self._shared:
            try:
                self._finish(reservation, deltas, wait=False)
            except _Busy:
                await asyncio.to_thread(self._finish, reservation, deltas, wait=True)
        else:
            self._finish(reservation, deltas, wait=True)

    def _finish(self, reservation: Reservation, deltas: tuple[int, int, float], *, wait: bool) -> None:
        try:
            self._open.remove(reservation.id)
        except KeyError:
            raise ValueError(f"reservation {reservation.id} was already settled or released") from None
        if not reservation.buckets:
            return

        def body(db: sqlite3.Connection) -> None:
            now = self._clock.monotonic()
            for b in reservation.buckets:
                row_key = (b.quota, b.scope_key, b.window_start)
                self._write(db, row_key, self._current(db, row_key, now).plus(*deltas))

        try:
            self._transact(body, wait=wait)
        except BaseException:
            self._open.add(reservation.id)  # nothing was applied; the caller may retry
            raise

    def _older(self, db: sqlite3.Connection, rule: _Rule, key: str, start: float, now: float) -> Usage:
        """The usage of a rolling window's steps before the current one (cached: they rarely change)."""
        ck = (rule.quota.name, key)
        hit = self._older_cache.get(ck)
        if hit is not None and hit[0] == start and now - hit[2] <= self._max_age:
            return hit[1]
        row = db.execute(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_usd), 0) FROM quota_usage "
            "WHERE quota = ? AND scope_key = ? AND window_start >= ? AND window_start < ?",
            (rule.quota.name, key, start - rule.older * rule.step - rule.step / 2, start - rule.step / 2)).fetchone()
        used = Usage(int(row[0]), int(row[1]), round(float(row[2]), _COST_DIGITS))
        if len(self._older_cache) >= _CACHE_MAX:
            self._older_cache.clear()
        self._older_cache[ck] = (start, used, now)
        return used

    def _write(self, db: sqlite3.Connection, row_key: tuple[str, str, float], new: Usage) -> Usage:
        # absolute values: the row was read inside this same write transaction
        db.execute(_UPSERT, (*row_key, new.requests, new.tokens, new.cost_usd))
        older = self._older_cache.get(row_key[:2])
        if older is not None and row_key[2] < older[0]:
            del self._older_cache[row_key[:2]]  # a late settle into an earlier step of a rolling window
        self._pending.append((row_key, new))
        return new

    def _transact(self, body: Callable[[sqlite3.Connection], _T], *, wait: bool) -> _T:
        """Run `body` in one BEGIN IMMEDIATE transaction; with wait=False raise _Busy instead of waiting.

        Rows `body` writes reach the probe cache after COMMIT but before the lock is released, so
        the next transaction in this process (which may read the cache) sees them.
        """
        if not self._lock.acquire(blocking=wait):
            raise _Busy
        try:
            db = self._db
            if not wait:
                db.execute("PRAGMA busy_timeout = 0")
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if not wait and "locked" in str(e):
                    raise _Busy from e
                raise
            finally:
                if not wait:
                    db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            self._pending = []
            try:
                result = body(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            now = self._clock.monotonic()
            for row_key, new in self._pending:
                self._remember(row_key, new, now)
            return result
        finally:
            self._pending = []
            self._lock.release()


