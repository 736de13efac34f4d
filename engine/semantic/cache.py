"""`SemanticCache`: the layer behind the exact cache that serves paraphrases.

The router asks it only after an exact miss (exact repeats never embed anything). A lookup
embeds the last user message in a worker thread, searches the nearest neighbours *within the
request's scope* (an opaque key the router computes from everything but that message: tenant,
route, parameters, earlier turns, tools, output format), and serves the best neighbour that
clears the threshold for the query type *and* every guard (`engine.semantic.guards`). After a
miss, `remember` stores the answer in the background: the response never waits for the index.

The index is this process's; entries other processes stored (a shared SQLite file, Redis) are
picked up with the store's `since` at most every `store.poll_s`, while the prompt is embedded,
so the catch-up costs a lookup nothing when the store answers faster than the embedder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.semantic.embedders import Embedder
from engine.semantic.guards import Facts, check, facts
from engine.semantic.hit import SemanticHit
from engine.semantic.index import ScopeIndex
from engine.semantic.store import Entry, EntryStore, StoreError, StoreReset, dumps

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from engine.policy.model import SemanticCacheConfig
    from engine.runtime.clock import Clock

__all__ = ["Probe", "SemanticCache", "SemanticHit"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    """What a lookup found, hit or not (for `engine explain` and the tests)."""

    hit: SemanticHit | None
    best_similarity: float | None
    """Cosine of the nearest neighbour in scope, None when the scope is empty."""
    threshold: float | None
    """The threshold that applied; None when the query type is kept out of the semantic cache."""
    refused_by: str | None
    """The guard that refused the nearest neighbour above the threshold, if one did."""
    vector: Any = None


class SemanticCache:
    """Paraphrase lookups over one store, one embedder.

    Args:
        config: the policy's `cache.semantic`.
        embedder: turns prompts into vectors.
        store: where entries persist (memory, the exact cache's SQLite file, or Redis).
        clock: wall-clock time for TTLs (entries may outlive the process), monotonic for polling.
        ttl_s: entry lifetime, the exact cache's.
        max_entries: bound over all scopes; the oldest entries go first.
    """

    def __init__(self, config: SemanticCacheConfig, embedder: Embedder, store: EntryStore, *, clock: Clock,
                 ttl_s: float, max_entries: int) -> None:
        self.config = config
        self.embedder = embedder
        self._store = store
        self._clock = clock
        self._ttl = ttl_s
        self._max = max(1, max_entries)
        self._indexes: dict[str, ScopeIndex] = {}
        self._scope_of: dict[int, str] = {}  # id -> scope, in insertion (= age) order
        self._last_id = 0
        self._loaded = False  # the first lookup reads everything, whatever the store's poll_s
        self._next_sync = 0.0
        self._syncing: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.hits = 0
        """Requests served a paraphrase's answer."""
        self.lookups = 0
        """Lookups made (each one an exact miss)."""
        self.saved_cost_usd = 0.0
        self.errors = 0
        """Lookups that failed (embedder or store errors) and were treated as misses."""

    # -- index upkeep -------------------------------------------------------------------------

    async def _sync(self) -> None:
        """Pick up entries stored since the last look (other processes sharing the store included),
        batch by batch: what is read is searchable at once, and kept when a later batch fails."""
        reset = False
        try:
            while True:
                try:
                    new = await self._store.since(self._last_id)
                except StoreReset as exc:
                    if reset:
                        raise
                    reset = True
                    _log.warning("semantic cache: %s; rebuilding the index from the store", exc)
                    self._forget()
                    continue
                if not new:
                    break
                self._take(new)
        except sqlite3.Error as exc:
            _log.warning("semantic cache: could not read new entries: %s", exc)
            return
        except StoreError as exc:  # a shared store's connection logs its outages itself
            _log.debug("semantic cache: could not read new entries: %s", exc)
            return
        self._loaded = True

    def _take(self, new: list[Entry]) -> None:
        now = self._clock.time()
        expired: list[int] = []
        for e in new:
            self._last_id = max(self._last_id, e.id)
            if e.expires_at <= now:
                expired.append(e.id)
            elif e.id not in self._scope_of:  # ours are indexed when stored
                self._index(e.scope).add(e.id, e.vector)
                self._scope_of[e.id] = e.scope
        self._drop(expired)
        self._evict()

    def _catch_up(self) -> asyncio.Task[None] | None:
        """The running catch-up, or a new one when the store is due a look; None when neither."""
        task = self._syncing
        if task is not None and not task.done():
            return task
        poll = self._store.poll_s
        now = self._clock.monotonic()
        if self._loaded and (poll is None or now < self._next_sync):
            return None
        self._next_sync = now + (poll or 0.0)
        task = self._syncing = asyncio.get_running_loop().create_task(self._sync())
        task.add_done_callback(_retrieve)
        return task

    def _forget(self) -> None:
        self._indexes.clear()
        self._scope_of.clear()
        self._last_id = 0

    def _index(self, scope: str) -> ScopeIndex:
        idx = self._indexes.get(scope)
        if idx is None:
            idx = self._indexes[scope] = ScopeIndex(self.embedder.dimension, kind=self.config.index,
                                                    ann_from=self.config.ann_from)
        return idx

    def _evict(self) -> None:
        over = len(self._scope_of) - self._max
        if over <= 0:
            return
        doomed = [i for i, _ in zip(self._scope_of, range(over), strict=False)]
        self._drop(doomed)

    def _drop(self, idents: list[int], *, in_store: bool = True) -> None:
        """Forget entries now; delete them from the store (unless told not to) in the background, off
        the lookup's path."""
        for i in idents:
            scope = self._scope_of.pop(i, None)
            if scope is not None:
                self._indexes[scope].remove(i)
        if idents and in_store:
            self._background(self._delete(idents))

    async def _delete(self, idents: list[int]) -> None:
        try:
            await self._store.delete(idents)
        except (sqlite3.Error, StoreError) as exc:
            _log.warning("semantic cache: could not delete entries: %s", exc)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def __len__(self) -> int:
        return len(self._scope_of)

    # -- lookups ------------------------------------------------------------------------------

    async def probe(self, scope: str, prompt: str, query_type: str) -> Probe:
        """Look for a paraphrase of `prompt` in `scope`; counts a lookup and, on success, a hit."""
        threshold = self.config.threshold_for(query_type)
        if threshold is None:
            return Probe(None, None, None, None)
        try:
            vector = await self._embed(prompt)
            found = await self._search(scope, prompt, vector, threshold)
        except Exception as exc:  # the cache is an optimisation: a broken embedder costs a miss, not the request
            self.errors += 1
            _log.warning("semantic cache: lookup failed, treating as a miss: %s", exc)
            return Probe(None, None, None, None)
        self.lookups += 1
        if found.hit is not None:
            self.hits += 1
            self.saved_cost_usd += found.hit.cost_usd
        return found

    async def peek(self, scope: str, prompt: str, query_type: str) -> Probe:
        """`probe` without counting anything (for `engine explain`)."""
        threshold = self.config.threshold_for(query_type)
        if threshold is None:
            return Probe(None, None, None, None)
        vector = await self._embed(prompt)
        return await self._search(scope, prompt, vector, threshold)

    async def _embed(self, prompt: str) -> npt.NDArray[np.float32]:
        """The prompt's vector, with the index caught up with the store meanwhile."""
        sync = self._catch_up()
        vector: npt.NDArray[np.float32] = (await self.embedder.embed_async([prompt]))[0]
        if sync is not None:
            # bounded: a replica's first look at a big shared store goes on in the background while
            # lookups search what is indexed so far; asyncio.wait never cancels the shared catch-up
            await asyncio.wait((sync,), timeout=self._store.wait_s)
        return vector

    async def _search(self, scope: str, prompt: str, vector: npt.NDArray[np.float32], threshold: float) -> Probe:
        idx = self._indexes.get(scope)
        if idx is None or not len(idx):
            return Probe(None, None, threshold, None, vector)
        now = self._clock.time()
        mine: Facts | None = None
        best: float | None = None
        refused: str | None = None
        expired: list[int] = []
        stale: list[int] = []
        try:
            for ident, sim in idx.search(vector, self.config.top_k):
                best = sim if best is None else max(best, sim)
                if sim < threshold:
                    break
                entry = await self._store.get(ident)
                if entry is None or entry.expires_at <= now:
                    expired.append(ident)
                    continue
                # the stored entry, not the index, decides: a shared store may have reused the id (a
                # Redis restarted empty) before the next catch-up noticed; then the index is what is stale
                if entry.scope != scope or entry.vector.shape != vector.shape or \
                        abs(float(entry.vector @ vector) - sim) > 1e-3:
                    stale.append(ident)
                    continue
                mine = mine or facts(prompt)
                reason = check(Facts.from_json(json.loads(entry.facts)), mine)
                if reason is not None:
                    refused = refused or reason
                    continue
                value: dict[str, Any] = json.loads(entry.value)
                return Probe(SemanticHit(value, entry.cost_usd, sim), best, threshold, None, vector)
        finally:
            self._drop(expired)
            self._drop(stale, in_store=False)
        return Probe(None, best, threshold, refused, vector)

    # -- stores -------------------------------------------------------------------------------

    def remember(self, scope: str, prompt: str, vector: npt.NDArray[np.float32] | None, value: dict[str, Any],
                 cost_usd: float) -> None:
        """Store an answer in the background (the caller has its response already)."""
        self._background(self._remember(scope, prompt, vector, value, cost_usd))

    async def _remember(self, scope: str, prompt: str, vector: npt.NDArray[np.float32] | None,
                        value: dict[str, Any], cost_usd: float) -> None:
        try:
            if vector is None:
                vector = (await self.embedder.embed_async([prompt]))[0]
            await self.store(scope, prompt, vector, value, cost_usd)
        except Exception as exc:  # the cache is an optimisation: a failed store costs a future miss
            _log.warning("semantic cache: entry not stored: %s", exc)

    async def store(self, scope: str, prompt: str, vector: npt.NDArray[np.float32], value: dict[str, Any],
                    cost_usd: float) -> None:
        """Store an answer now and index it."""
        f = dumps(facts(prompt).to_json())
        ident = await self._store.add(scope, vector, f, dumps(value), float(cost_usd),
                                      self._clock.time() + self._ttl)
        if ident == self._last_id + 1:  # nobody else stored in between: nothing for a catch-up to miss
            self._last_id = ident
        if ident not in self._scope_of:
            self._index(scope).add(ident, vector)
            self._scope_of[ident] = scope
        self._evict()

    async def drain(self) -> None:
        """Wait for background stores, deletes and catch-ups (tests, shutdown)."""
        while self._pending or (self._syncing is not None and not self._syncing.done()):
            waits = [*self._pending, *([self._syncing] if self._syncing is not None else [])]
            await asyncio.gather(*waits, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish background work, then close the store and the embedder."""
        await self.drain()
        await self._store.aclose()
        self.embedder.close()


def _retrieve(task: asyncio.Task[None]) -> None:
    # a catch-up whose lookups were all cancelled still has its failure seen (and logged) once
    if not task.cancelled() and task.exception() is not None:
        _log.warning("semantic cache: catch-up failed: %s", task.exception())
