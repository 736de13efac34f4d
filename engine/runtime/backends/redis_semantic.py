"""Semantic cache entries in Redis, shared by every replica (`state.backend: redis`).

Keys, under the policy's prefix and the embedder's name (vectors of another embedder never mix):

- `{prefix}s:{model}:meta`: a hash of the id counter (`seq`, `HINCRBY`) and an `epoch` token set
  by whoever finds it missing; it never expires, so ids only grow while Redis keeps its data.
- `{prefix}s:{model}:ids`: a sorted set of the live ids (score = id): what `since` walks.
- `{prefix}s:{model}:e:{id}`: one hash per entry (scope, float32 vector, guard facts, value,
  cost, expires_at), with the cache's `ttl_s` as Redis expiry.

An entry is written by one script (id, hash and set member at once), so a reader that has seen
id N has seen every id below N. `since` first compares the counter with the last id it saw:
when nothing was added it is one round trip that returns nothing, which is what each replica
pays per poll. The set is trimmed to `max_entries` on every add (the oldest go, hash and all);
ids whose hash expired are dropped from the set as `since` walks past them. Another epoch (or a
counter below what a replica saw) means Redis lost its data, and ids will be reused: `since`
raises `StoreReset` and the replica rebuilds its index. Until its next poll a replica may still
hold a reused id; the cache checks the entry it fetches (scope, vector) before serving it.

Entry keys are built inside the scripts, which a single Redis (the supported deployment, see
docs/operations.md) allows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.runtime.backends.redis_conn import RedisConn, StateDown
from engine.semantic.store import Entry, StoreError, StoreReset

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["RedisEntryStore"]

_BATCH = 500  # entries per `since` round trip: bounded replies, each well within timeout_ms
_FIELDS = ("scope", "vector", "facts", "value", "cost", "expires_at")

SEMANTIC_ADD = """
-- KEYS: meta hash, id set; ARGV: entry key prefix, epoch if none, scope, vector, facts, value, cost,
--       expires_at, ttl ms, max entries. Returns the new id.
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local id = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local k = ARGV[1] .. id
redis.call('HSET', k, 'scope', ARGV[3], 'vector', ARGV[4], 'facts', ARGV[5], 'value', ARGV[6],
           'cost', ARGV[7], 'expires_at', ARGV[8])
redis.call('PEXPIRE', k, ARGV[9])
redis.call('ZADD', KEYS[2], id, id)
redis.call('PEXPIRE', KEYS[2], ARGV[9])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[10])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do redis.call('DEL', ARGV[1] .. old) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return id
"""

SEMANTIC_SINCE = """
-- KEYS: meta hash, id set; ARGV: entry key prefix, epoch if none, last id seen, batch size.
-- Returns {epoch, counter, last id walked past, then per live entry: id and its six fields}.
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local seq = tonumber(m[2] or '0')
local after, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
if seq <= after then return {m[1], seq, after} end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[3], '+inf', 'LIMIT', 0, limit)
local out = {m[1], seq, after}
for _, id in ipairs(ids) do
  out[3] = tonumber(id)
  local f = redis.call('HMGET', ARGV[1] .. id, 'scope', 'vector', 'facts', 'value', 'cost', 'expires_at')
  if f[1] then
    out[#out + 1] = id
    for j = 1, 6 do out[#out + 1] = f[j] end
  else
    redis.call('ZREM', KEYS[2], id)  -- its hash expired
  end
end
-- the last batch: every id up to the counter has been walked (ids enter the set with the counter)
if #ids < limit then out[3] = seq end
return out
"""


class RedisEntryStore:
    """`EntryStore` on Redis, for one embedder; see the module docstring for the layout.

    Args:
        conn: the router's Redis connection (the one its exact cache, quotas and limits use).
        model: the embedder's name.
        ttl_s: entry lifetime (Redis expiry of each entry).
        max_entries: bound on the shared entries; the oldest go first.
        poll_s: how often a replica's lookups look for other replicas' entries.
        owns_conn: close `conn` with the store (a store built without the router's connection).
    """

    def __init__(self, conn: RedisConn, model: str, *, ttl_s: float, max_entries: int, poll_s: float = 0.05,
                 owns_conn: bool = False) -> None:
        self._conn = conn
        self.poll_s: float | None = poll_s
        self.wait_s: float | None = conn.timeout_s  # one operation's budget, state.timeout_ms
        self._meta = conn.key("s", model, "meta")
        self._ids = conn.key("s", model, "ids")
        self._entry = conn.key("s", model, "e", "")
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._max = max(1, max_entries)
        self._walked = 0  # ids up to here were read by `since` (the cache's last id may lag behind it)
        self._epoch: bytes | None = None  # the epoch `since` last saw
        self._owns_conn = owns_conn

    async def _script(self, lua: str, args: list[Any]) -> Any:
        try:
            # a fresh epoch each call: one created again after a loss must differ from every earlier one
            return await self._conn.script(lua, [self._meta, self._ids], [self._entry, os.urandom(8).hex(), *args])
        except StateDown as e:
            raise StoreError(str(e)) from e

    async def add(self, scope: str, vector: npt.NDArray[np.float32], facts: str, value: str, cost_usd: float,
                  expires_at: float) -> int:
        """Store an entry; returns its id (from the shared counter)."""
        got = await self._script(SEMANTIC_ADD, [scope, vector.astype("<f4").tobytes(), facts, value, repr(cost_usd),
                                                repr(expires_at), self._ttl_ms, self._max])
        return int(got)

    async def get(self, ident: int) -> Entry | None:
        """The entry, or None when it expired or was deleted."""
        key = self._entry + str(ident)
        try:
            fields = await self._conn.run(lambda c: c.hmget(key, list(_FIELDS)))
        except StateDown as e:
            raise StoreError(str(e)) from e
        return None if fields[0] is None else _entry(ident, fields)

    async def since(self, last_id: int) -> list[Entry]:
        """The next entries above `last_id` in id order, up to a batch (ids whose entry expired are
        walked past); one round trip when there are none.

        Raises:
            StoreReset: Redis lost the entries seen so far (another epoch, or the counter went back).
            StoreError: Redis is down or too slow.
        """
        after = max(last_id, self._walked)
        out: list[Entry] = []
        while True:
            reply = await self._script(SEMANTIC_SINCE, [after, _BATCH])
            epoch, seq, walked = reply[0], int(reply[1]), int(reply[2])
            if (self._epoch is not None and epoch != self._epoch) or seq < after:
                self._walked, self._epoch = 0, epoch
                raise StoreReset("the semantic entries in Redis were lost (flushed, evicted or a restart "
                                 f"without persistence): id counter at {seq}, ids up to {after} were seen")
            self._epoch = epoch
            rest = reply[3:]
            for i in range(0, len(rest), 1 + len(_FIELDS)):
                out.append(_entry(int(rest[i]), rest[i + 1:i + 1 + len(_FIELDS)]))
            after = self._walked = walked
            if out or walked >= seq:  # a batch at a time: the cache indexes it before asking for more
                return out

    async def delete(self, idents: Iterable[int]) -> None:
        """Drop entries, for every replica (theirs find them gone on their next `get`)."""
        ids = [str(i) for i in idents]
        if not ids:
            return
        keys = [self._entry + i for i in ids]

        async def op(client: Any) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.delete(*keys)
            pipe.zrem(self._ids, *ids)
            return await pipe.execute()

        try:
            await self._conn.run(op)
        except StateDown as e:
            raise StoreError(str(e)) from e

    async def aclose(self) -> None:
        """Close the connection when the store opened it (the router's is closed by the router)."""
        if self._owns_conn:
            await self._conn.aclose()


def _entry(ident: int, fields: list[Any]) -> Entry:
    import numpy as np

    scope, vector, facts, value, cost, expires = fields
    return Entry(ident, scope.decode(), np.frombuffer(vector, dtype="<f4").astype(np.float32), facts.decode(),
                 value.decode(), float(cost), float(expires))
