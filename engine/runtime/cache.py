"""Exact response cache: identical requests (same scope, target, messages, params) share a response.

Two backends, chosen by the policy's `cache.backend`:

- `memory`: an `OrderedDict` used as an LRU, bounded by `max_entries`, entries expire after
  `ttl_s` of the clock's monotonic time.
- `sqlite`: a `response_cache` table in a file (by default the decision log's), so entries survive
  a restart and are shared by processes using the same file; TTLs use wall-clock time for that
  reason, and LRU order is a sequence number bumped on every use (written with the next store,
  so that hits never take the write lock).

Values are stored as JSON text in both backends, so every reader gets its own fresh dict and a
caller mutating a response can never corrupt the cache.

`get_or_compute` adds single-flight: identical concurrent misses share one upstream call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.policy.model import CacheConfig
from engine.runtime.clock import Clock
from engine.store.sqlite import enable_wal

__all__ = ["ResponseCache"]

Compute = Callable[[], Awaitable[tuple[dict[str, Any], float]]]
"""Produces (response value, its cost in USD) on a miss."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS response_cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS response_cache_expires ON response_cache (expires_at);
CREATE INDEX IF NOT EXISTS response_cache_used ON response_cache (used_seq);
"""

# Bound to locals once: these run on every key and every hit.
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_sha256 = hashlib.sha256
_log = logging.getLogger(__name__)
_BUSY_MS = 200
"""How long a store may wait for another writer of the file before giving up on caching."""


def _load(raw: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    return value


class ResponseCache:
    """The exact response cache of one policy.

    Args:
        config: the policy's `cache:` section.
        clock: time source for TTLs (monotonic for `memory`, wall clock for `sqlite`).
        path: SQLite file for `backend: sqlite`; overrides `config.path`.

    Raises:
        ValueError: `backend: sqlite` without any file to put the table in.

    When `config.enabled` is false, `get` always misses, `put` stores nothing and
    `get_or_compute` calls `compute` every time.
    """

    def __init__(self, config: CacheConfig, *, clock: Clock, path: str | Path | None = None) -> None:
        self.config = config
        self._clock = clock
        self._enabled = config.enabled
        self._ttl = float(config.ttl_s)
        self._max = max(1, int(config.max_entries))
        # The scope only partitions the key space when the policy says so.
        self._scoped = config.scope == "tenant"
        self._ws = "whitespace" in config.normalize
        self._case = "case" in config.normalize
        # key -> (expires_at monotonic, JSON text, cost): insertion/use order is LRU order.
        self._mem: OrderedDict[str, tuple[float, str, float]] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        # sqlite keys read since the last store, oldest use first: their LRU bump is written
        # by the next store, so that hits stay read-only (no write lock on the hit path).
        self._touched: dict[str, None] = {}
        # key -> future of (JSON text, cost) for the one request computing it right now.
        self._inflight: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self.hits = 0
        """Requests served without their own upstream call (stored entries and shared in-flight calls)."""
        self.misses = 0
        """Requests that had to call upstream."""
        self.coalesced = 0
        """Hits that were served by waiting on another request's in-flight call (a subset of `hits`)."""
        self.saved_cost_usd = 0.0
        """Sum of the costs of the upstream calls that hits avoided."""
        if config.backend == "sqlite":
            db_path = path if path is not None else config.path
            if db_path is None:
                raise ValueError("cache backend 'sqlite' needs a file: set cache.path or log.sqlite in the policy")
            self._db = self._open(Path(db_path))

    # -- keys ---------------------------------------------------------------------------------

    def make_key(
        self,
        *,
        scope: str | None,
        target: str,
        messages: Sequence[tuple[str, str]],
        params: Mapping[str, Any],
    ) -> str:
        """The cache key of one request: a sha256 hex digest.

        Args:
            scope: the tenant; ignored when the policy's cache scope is `global`.
            target: what the request was routed to (route name or plan), so that a policy
                change that re-routes a request never serves another model's answer.
            messages: (role, content) pairs; content is normalized as `cache.normalize` says.
            params: generation parameters (max_tokens, temperature, stop...). `None` values are
                dropped and integral floats compare equal to ints (`temperature: 0` == `0.0`).

        Returns:
            A 64-character hex digest.
        """
        ws, case = self._ws, self._case
        msgs: list[tuple[str, str]] = []
        for role, content in messages:
            if ws:
                content = " ".join(content.split())
            if case:
                content = content.lower()
            msgs.append((role, content))
        canon: dict[str, Any] = {}
        for name, v in params.items():
            if v is None:
                continue
            if type(v) is float and v.is_integer():
                v = int(v)
            canon[name] = v
        payload = [(scope or "") if self._scoped else "", target, msgs, canon]
        return _sha256(_dumps(payload).encode()).hexdigest()

    # -- plain get/put ------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached value for `key`, or None; counts a hit or a miss."""
        found = self.take(key)
        if found is None:
            if self._enabled:
                self.misses += 1
            return None
        return _load(found[0])

    def take(self, key: str) -> tuple[str, float] | None:
        """The stored (JSON text, cost) for `key`, counted as a hit; None when absent (nothing is
        counted: the caller goes on to `get_or_compute`, which counts the miss)."""
        if not self._enabled:
            return None
        found = self._lookup(key)
        if found is not None:
            self.hits += 1
            self.saved_cost_usd += found[1]
        return found

    def put(self, key: str, value: dict[str, Any], cost_usd: float) -> None:
        """Store `value` (a JSON-serializable dict) and what producing it cost.

        Raises:
            TypeError: `value` is not JSON-serializable.
        """
        if self._enabled:
            self._store(key, _dumps(value), float(cost_usd))

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses); 0.0 before any request."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __len__(self) -> int:
        """Entries stored now (expired ones not yet evicted included)."""
        if self._db is not None:
            row = self._db.execute("SELECT COUNT(*) FROM response_cache").fetchone()
            return int(row[0])
        return len(self._mem)

    def clear(self) -> None:
        """Drop every entry (statistics are kept)."""
        self._mem.clear()
        self._touched.clear()
        if self._db is not None:
            self._db.execute("DELETE FROM response_cache")

    def close(self) -> None:
        """Close the SQLite connection, if any, after saving the LRU order; the cache is unusable afterwards."""
        if self._db is not None:
            if self._touched:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        self._write_touches(self._db)
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    _log.warning("response cache: could not save the LRU order: %s", exc)
                self._touched.clear()
            self._db.close()
            self._db = None
            self._enabled = False

    # -- single flight ------------------------------------------------------------------------

    async def get_or_compute(self, key: str, compute: Compute) -> tuple[dict[str, Any], bool]:
        """The cached value for `key`, or the result of `compute()`, stored before it is returned.

        Identical concurrent misses share one `compute()` call: the first caller (the leader)
        runs it and the others wait for its result. If `compute()` raises, the leader and every
        waiter get that exception and nothing is stored. If the leader is cancelled, one waiter
        takes over and computes (no waiter is left hanging, none sees the leader's cancellation).

        Returns:
            (value, hit) where `hit` is True when no upstream call was made for this request.
        """
        if not self._enabled:
            value, _ = await compute()
            return value, False
        while True:
            found = self.take(key)
            if found is not None:
                return _load(found[0]), True
            pending = self._inflight.get(key)
            if pending is None:
                return await self._lead(key, compute), False
            # asyncio.wait, unlike awaiting the future, neither cancels the shared future when
            # this waiter is cancelled nor confuses the leader's cancellation with our own.
            await asyncio.wait((pending,))
            if pending.cancelled():
                continue  # the leader gave up: look again, and lead if nobody else has
            raw, cost = pending.result()  # re-raises the leader's exception to every waiter
            self.hits += 1
            self.coalesced += 1
            self.saved_cost_usd += cost
            return _load(raw), True

    async def _lead(self, key: str, compute: Compute) -> dict[str, Any]:
        fut: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        self.misses += 1
        try:
            value, cost = await compute()
            raw = _dumps(value)
            cost = float(cost)
            self._store(key, raw, cost)
        except Exception as exc:
            fut.set_exception(exc)
            # Marks the exception retrieved: with no waiter, asyncio would otherwise log
            # "Future exception was never retrieved" although the leader re-raises it.
            fut.exception()
            raise
        except BaseException:
            fut.cancel()
            raise
        else:
            fut.set_result((raw, cost))
            return value
        finally:
            if self._inflight.get(key) is fut:
                del self._inflight[key]

    # -- backends -----------------------------------------------------------------------------

    def _lookup(self, key: str) -> tuple[str, float] | None:
        if self._db is not None:
            try:
                return self._sql_lookup(self._db, key)
            except sqlite3.Error as exc:
                # The cache is an optimisation: a broken or busy file costs a miss, not the request.
                _log.warning("response cache: lookup failed, treating as a miss: %s", exc)
                return None
        entry = self._mem.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock.monotonic():
            del self._mem[key]
            return None
        self._mem.move_to_end(key)
        return entry[1], entry[2]

    def _store(self, key: str, raw: str, cost: float) -> None:
        if self._db is not None:
            try:
                self._sql_store(self._db, key, raw, cost)
            except sqlite3.Error as exc:
                _log.warning("response cache: store failed, entry not cached: %s", exc)
            return
        mem = self._mem
        mem[key] = (self._clock.monotonic() + self._ttl, raw, cost)
        mem.move_to_end(key)
        while len(mem) > self._max:
            mem.popitem(last=False)

    def _open(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, so each statement outside one
        # commits at once and no write lock is held between requests (the file may be shared).
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 5000")  # start-up may wait for other writers
        enable_wal(db)
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        # Afterwards every call runs on the event loop: a busy file must cost a skipped store,
        # not a stalled loop. Lookups only read, and WAL readers never wait for writers.
        db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        return db

    def _sql_lookup(self, db: sqlite3.Connection, key: str) -> tuple[str, float] | None:
        row = db.execute("SELECT value, cost_usd, expires_at FROM response_cache WHERE key = ?", (key,)).fetchone()
        if row is None or row[2] <= self._clock.time():
            return None  # expired rows are pruned by the next store, keeping reads write-free
        # LRU order only matters when a store evicts, so uses are written with the next store.
        touched = self._touched
        touched.pop(key, None)
        touched[key] = None
        if len(touched) > self._max:
            del touched[next(iter(touched))]
        return str(row[0]), float(row[1])

    def _sql_store(self, db: sqlite3.Connection, key: str, raw: str, cost: float) -> None:
        now = self._clock.time()
        # IMMEDIATE takes the write lock up front, so the count and the pruning below see the
        # same table as the insert even when other processes share the file.
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._write_touches(db)
            db.execute(
                "INSERT OR REPLACE INTO response_cache (key, value, cost_usd, created_at, expires_at, used_seq) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, raw, cost, now, now + self._ttl, seq + 1),
            )
            db.execute("DELETE FROM response_cache WHERE expires_at <= ?", (now,))
            (count,) = db.execute("SELECT COUNT(*) FROM response_cache").fetchone()
            if count > self._max:
                db.execute(
                    "DELETE FROM response_cache WHERE key IN "
                    "(SELECT key FROM response_cache ORDER BY used_seq LIMIT ?)",
                    (count - self._max,),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._touched.clear()

    def _write_touches(self, db: sqlite3.Connection) -> int:
        """Bump the keys used since the last write, in order of use; returns the last sequence number."""
        (seq,) = db.execute("SELECT COALESCE(MAX(used_seq), 0) FROM response_cache").fetchone()
        touched = list(self._touched)
        db.executemany(
            "UPDATE response_cache SET used_seq = ? WHERE key = ?",
            [(seq + i, k) for i, k in enumerate(touched, 1)],
        )
        return int(seq) + len(touched)
