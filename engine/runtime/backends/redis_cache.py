"""The response cache on Redis: entries with TTL shared by every router, and single flight across them.

An entry is one string key (`{prefix}c:{cache key}`: the key already holds the tenant scope,
the target and the normalized request) whose value is the JSON response and its cost, set with
the policy's `ttl_s` as expiry; `max_entries` does not apply, Redis' own `maxmemory` and
eviction policy bound the cache (`allkeys-lru` is the usual choice).

Single flight: identical concurrent misses in one router share one call as in the embedded
cache; across routers, the first to `SET NX` a short lock (`lock_s`) is the leader, the others
poll for its entry and take over when the lock goes away without one (the leader failed or
died), so a dead leader holds its followers at most `lock_s`. While Redis is down the cache
misses (every request computes) and single flight is per router.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
from typing import Any

from engine.policy.model import CacheConfig
from engine.runtime.backends.redis_conn import RedisConn, StateDown
from engine.runtime.cache import Compute, ResponseCache, _dumps, _load
from engine.runtime.clock import Clock

__all__ = ["RedisResponseCache"]

_log = logging.getLogger("engine.state")
_POLL_S = (0.005, 0.01, 0.02, 0.05)  # follower poll intervals, then the last one repeated


def _set_nx(client: Any, *, key: str, value: str, px: int) -> Any:
    return client.set(key, value, nx=True, px=px)


_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RedisResponseCache(ResponseCache):
    """`ResponseCache` whose entries and single-flight locks live in Redis.

    Args:
        config: the policy's `cache:` section (its `backend` and `path` are not used).
        clock: as `ResponseCache`.
        conn: the router's Redis connection.
        lock_s: lifetime of a leader's lock.
    """

    def __init__(self, config: CacheConfig, *, clock: Clock, conn: RedisConn, lock_s: float) -> None:
        super().__init__(dataclasses.replace(config, backend="memory"), clock=clock)
        self._conn = conn
        self._lock_ms = max(1, int(lock_s * 1000))
        self._ttl_ms = max(1, int(self._ttl * 1000))
        self._origin = os.urandom(6).hex()
        self._n = 0
        self._pending_writes: set[asyncio.Task[None]] = set()
        self.store_errors = 0
        """Lookups and stores that Redis failed (each cost a miss or an uncached entry)."""

    def _rkey(self, key: str) -> str:
        return self._conn.key("c", key)

    async def _fetch(self, key: str) -> tuple[str, float] | None:
        raw = await self._conn.run(lambda c: c.get(self._rkey(key)))
        if raw is None:
            return None
        text, cost = json.loads(raw)
        return str(text), float(cost)

    async def get_or_compute(self, key: str, compute: Compute) -> tuple[dict[str, Any], bool]:
        """The entry for `key` from Redis, or the result of `compute()` stored there; see `ResponseCache`."""
        if not self._enabled:
            value, _ = await compute()
            return value, False
        poll = 0
        token = ""
        while True:
            try:
                found = await self._fetch(key)
            except StateDown:
                self.store_errors += 1
                return await self._without_redis(key, compute)
            if found is not None:
                self.hits += 1
                self.saved_cost_usd += found[1]
                if poll:
                    self.coalesced += 1
                return _load(found[0]), True
            pending = self._inflight.get(key)
            if pending is not None:  # a request of this router leads: wait for it as the embedded cache does
                await asyncio.wait((pending,))
                if pending.cancelled() or pending.exception() is not None:
                    continue
                raw, cost = pending.result()
                self.hits += 1
                self.coalesced += 1
                self.saved_cost_usd += cost
                return _load(raw), True
            if not token:
                self._n += 1
                token = f"{self._origin}-{self._n}"
            lock = self._rkey(key) + ":lock"
            try:
                got = await self._conn.run(functools.partial(_set_nx, key=lock, value=token, px=self._lock_ms))
            except StateDown:
                self.store_errors += 1
                return await self._without_redis(key, compute)
            if got:
                try:
                    value = await self._lead(key, compute)
                    await self.flush()  # the entry is in Redis before the lock goes: followers find it
                    return value, False
                finally:
                    try:
                        await self._conn.script(_UNLOCK, [lock], [token])
                    except StateDown:
                        pass  # the lock expires by itself
            # another router leads: poll for its entry; when its lock is gone without one, lead
            await asyncio.sleep(_POLL_S[min(poll, len(_POLL_S) - 1)])
            poll += 1

    async def _without_redis(self, key: str, compute: Compute) -> tuple[dict[str, Any], bool]:
        pending = self._inflight.get(key)
        if pending is not None:
            await asyncio.wait((pending,))
            if not pending.cancelled():
                raw, cost = pending.result()
                self.hits += 1
                self.coalesced += 1
                self.saved_cost_usd += cost
                return _load(raw), True
        return await self._lead(key, compute), False

    def _store(self, key: str, raw: str, cost: float) -> None:
        # called by `_lead` on the loop; the write goes out as its own task, so a slow Redis
        # never delays the leader's answer
        text = _dumps([raw, cost])
        rkey, ttl = self._rkey(key), self._ttl_ms

        async def put() -> None:
            try:
                await self._conn.run(lambda c: c.set(rkey, text, px=ttl))
            except StateDown as e:
                self.store_errors += 1
                _log.debug("response cache: entry not stored: %s", e)

        task = asyncio.get_running_loop().create_task(put())
        self._pending_writes.add(task)
        task.add_done_callback(self._pending_writes.discard)

    def get(self, key: str) -> dict[str, Any] | None:
        """Not available on Redis (it would block the loop): use `get_or_compute`."""
        raise TypeError("RedisResponseCache.get would block the event loop; use `await get_or_compute(...)`")

    def put(self, key: str, value: dict[str, Any], cost_usd: float) -> None:
        """Not available on Redis (it would block the loop): use `get_or_compute`."""
        raise TypeError("RedisResponseCache.put would block the event loop; use `await get_or_compute(...)`")

    def __len__(self) -> int:
        """Entries this router stored in its fallback memory (Redis holds the shared ones)."""
        return len(self._mem)

    async def flush(self) -> None:
        """Wait for the stores still on their way to Redis."""
        if self._pending_writes:
            await asyncio.gather(*list(self._pending_writes), return_exceptions=True)
