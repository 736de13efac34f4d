"""Where semantic cache entries live: behind `EntryStore`, one per cache backend.

An entry is a served answer plus what is needed to match it again: the scope key, the vector of
its prompt, the prompt's guard facts, the value and its cost. Three stores:

- `MemoryEntryStore`: this process only (the cache's `memory` backend).
- `SqliteEntryStore`: a `semantic_cache` table in the exact cache's file, so entries survive a
  restart and processes sharing the file see each other's entries (`since` picks up new rows).
- `engine.runtime.backends.redis_semantic.RedisEntryStore`: entries in Redis (`state.backend:
  redis`), shared by every replica, each of which keeps its own index up to date with `since`.

The methods are coroutines because a remote store must not block the event loop; the two local
stores do their (sub-millisecond) work inline, as the exact cache does.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engine.store.sqlite import enable_wal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Entry", "EntryStore", "MemoryEntryStore", "SqliteEntryStore", "StoreError", "StoreReset"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer as the semantic layer sees it."""

    id: int
    scope: str
    vector: npt.NDArray[np.float32]
    facts: str
    """JSON of the prompt's `guards.Facts`."""
    value: str
    """JSON of the cached response."""
    cost_usd: float
    expires_at: float


class StoreError(Exception):
    """The store could not answer (a remote store is down or too slow): the lookup or store is skipped."""


class StoreReset(StoreError):
    """The store lost entries the caller has seen (its id counter went back: a Redis restarted empty).

    The caller forgets its index and reads everything again with `since(0)`.
    """


class EntryStore(Protocol):
    """Storage of semantic entries for one embedder (`model`); ids grow monotonically.

    One store serves one `SemanticCache`, which adds the entries it stores to its index itself
    and picks up everyone else's with `since`.
    """

    poll_s: float | None
    """How often a lookup asks `since` for entries added elsewhere: 0 = every lookup, None = never
    (nobody else writes to this store)."""
    wait_s: float | None
    """How long a lookup waits for that catch-up before searching what is indexed (None: until done)."""

    async def add(self, scope: str, vector: npt.NDArray[np.float32], facts: str, value: str, cost_usd: float,
                  expires_at: float) -> int:
        """Store an entry; returns its id."""
        ...

    async def get(self, ident: int) -> Entry | None:
        """The entry, or None when it was deleted or expired."""
        ...

    async def since(self, last_id: int) -> list[Entry]:
        """Entries with an id above `last_id` (everything at start-up: `since(0)`), in id order: all
        of them or a first batch (the caller asks again from the last id it got); empty: none.

        Raises:
            StoreReset: entries the caller saw are gone (see `StoreReset`).
            StoreError: the store could not answer.
        """
        ...

    async def delete(self, idents: Iterable[int]) -> None:
        """Drop entries (expired or evicted)."""
        ...

    async def aclose(self) -> None:
        """Release the backing resources."""
        ...


class MemoryEntryStore:
    """Entries in a dict: one process, gone at exit."""

    poll_s: float | None = None
    wait_s: float | None = None

    def __init__(self) -> None:
        self._entries: dict[int, Entry] = {}
        self._ids = itertools.count(1)

    async def add(self, scope: str, vector: npt.NDArray[np.float32], facts: str, value: str, cost_usd: float,
                  expires_at: float) -> int:
        """Store an entry; returns its id."""
        ident = next(self._ids)
        self._entries[ident] = Entry(ident, scope, vector, facts, value, cost_usd, expires_at)
        return ident

    async def get(self, ident: int) -> Entry | None:
        """The entry, or None."""
        return self._entries.get(ident)

    async def since(self, last_id: int) -> list[Entry]:
        """Entries above `last_id`, in id order (ids only grow, so the dict is already in that order)."""
        new: list[Entry] = []
        for i in reversed(self._entries):  # newest first: stops at the first entry already seen
            if i <= last_id:
                break
            new.append(self._entries[i])
        return new[::-1]

    async def delete(self, idents: Iterable[int]) -> None:
        """Drop entries."""
        for i in idents:
            self._entries.pop(i, None)

    async def aclose(self) -> None:
        """Drop everything."""
        self._entries.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS semantic_cache (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    scope TEXT NOT NULL,
    vector BLOB NOT NULL,
    facts TEXT NOT NULL,
    value TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS semantic_cache_model ON semantic_cache (model, id);
"""


class SqliteEntryStore:
    """Entries in a `semantic_cache` table, vectors as float32 blobs.

    Args:
        path: the SQLite file (the exact cache's).
        model: the embedder's name; rows of another embedder are ignored (their vectors differ).
    """

    poll_s: float | None = 0.0  # a local query: other processes' rows are looked for on every lookup
    wait_s: float | None = None

    def __init__(self, path: str | Path, model: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._model = model
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        enable_wal(self._db)
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout = 200")  # afterwards a busy file costs a skipped store

    async def add(self, scope: str, vector: npt.NDArray[np.float32], facts: str, value: str, cost_usd: float,
                  expires_at: float) -> int:
        """Store an entry; returns its id."""
        cur = self._db.execute(
            "INSERT INTO semantic_cache (model, scope, vector, facts, value, cost_usd, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self._model, scope, vector.astype("<f4").tobytes(), facts, value, cost_usd, expires_at))
        return int(cur.lastrowid or 0)

    def _entry(self, row: tuple[int, str, bytes, str, str, float, float]) -> Entry:
        import numpy as np

        ident, scope, blob, facts, value, cost, expires = row
        return Entry(int(ident), scope, np.frombuffer(blob, dtype="<f4").astype(np.float32), facts, value,
                     float(cost), float(expires))

    async def get(self, ident: int) -> Entry | None:
        """The entry, or None."""
        row = self._db.execute("SELECT id, scope, vector, facts, value, cost_usd, expires_at FROM semantic_cache "
                               "WHERE id = ?", (ident,)).fetchone()
        return None if row is None else self._entry(row)

    async def since(self, last_id: int) -> list[Entry]:
        """Rows above `last_id` for this embedder, in id order (other processes' new rows included)."""
        rows = self._db.execute("SELECT id, scope, vector, facts, value, cost_usd, expires_at FROM semantic_cache "
                                "WHERE model = ? AND id > ? ORDER BY id", (self._model, last_id)).fetchall()
        return [self._entry(r) for r in rows]

    async def delete(self, idents: Iterable[int]) -> None:
        """Drop rows."""
        self._db.executemany("DELETE FROM semantic_cache WHERE id = ?", [(i,) for i in idents])

    async def aclose(self) -> None:
        """Close the connection."""
        self._db.close()


def dumps(value: object) -> str:
    """Compact JSON, as the exact cache stores values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
