"""`SemanticCache`: the layer behind the exact cache that serves paraphrases.

The router asks it only after an exact miss (exact repeats never embed anything). A lookup
embeds the last user message in a worker thread, searches the nearest neighbours *within the
request's scope* (an opaque key the router computes from everything but that message: tenant,
route, parameters, earlier turns, tools, output format), and serves the best neighbour that
clears the threshold for the query type *and* every guard (`engine.semantic.guards`). After a
miss, `remember` stores the answer in the background: the response never waits for the index.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.semantic.embedders import Embedder
from engine.semantic.guards import Facts, check, facts
from engine.semantic.hit import SemanticHit
from engine.semantic.index import ScopeIndex
from engine.semantic.store import EntryStore, dumps

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
        store: where entries persist (memory or the exact cache's SQLite file).
        clock: wall-clock time for TTLs (entries may outlive the process).
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
        self._pending: set[asyncio.Task[None]] = set()
        self.hits = 0
        """Requests served a paraphrase's answer."""
        self.lookups = 0
        """Lookups made (each one an exact miss)."""
        self.saved_cost_usd = 0.0
        self.errors = 0
        """Lookups that failed (embedder or store errors) and were treated as misses."""
        self._sync()

    # -- index upkeep -------------------------------------------------------------------------

    def _sync(self) -> None:
        """Pick up entries stored since the last look (other processes sharing the file included)."""
        try:
            new = list(self._store.since(self._last_id))
        except sqlite3.Error as exc:
            _log.warning("semantic cache: could not read new entries: %s", exc)
            return
        for e in new:
            self._index(e.scope).add(e.id, e.vector)
            self._scope_of[e.id] = e.scope
            self._last_id = max(self._last_id, e.id)
        self._evict()

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

    def _drop(self, idents: list[int]) -> None:
        for i in idents:
            scope = self._scope_of.pop(i, None)
            if scope is not None:
                self._indexes[scope].remove(i)
        try:
            self._store.delete(idents)
        except sqlite3.Error as exc:
            _log.warning("semantic cache: could not delete entries: %s", exc)

    def __len__(self) -> int:
        return len(self._scope_of)

    # -- lookups ------------------------------------------------------------------------------

    async def probe(self, scope: str, prompt: str, query_type: str) -> Probe:
        """Look for a paraphrase of `prompt` in `scope`; counts a lookup and, on success, a hit."""
        threshold = self.config.threshold_for(query_type)
        if threshold is None:
            return Probe(None, None, None, None)
        try:
            vector = (await self.embedder.embed_async([prompt]))[0]
            found = self._search(scope, prompt, vector, threshold)
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
        vector = (await self.embedder.embed_async([prompt]))[0]
        return self._search(scope, prompt, vector, threshold)

    def _search(self, scope: str, prompt: str, vector: npt.NDArray[np.float32], threshold: float) -> Probe:
        self._sync()
        idx = self._indexes.get(scope)
        if idx is None or not len(idx):
            return Probe(None, None, threshold, None, vector)
        now = self._clock.time()
        mine: Facts | None = None
        best: float | None = None
        refused: str | None = None
        expired: list[int] = []
        for ident, sim in idx.search(vector, self.config.top_k):
            best = sim if best is None else max(best, sim)
            if sim < threshold:
                break
            entry = self._store.get(ident)
            if entry is None or entry.expires_at <= now:
                expired.append(ident)
                continue
            mine = mine or facts(prompt)
            reason = check(Facts.from_json(json.loads(entry.facts)), mine)
            if reason is not None:
                refused = refused or reason
                continue
            value: dict[str, Any] = json.loads(entry.value)
            if expired:
                self._drop(expired)
            return Probe(SemanticHit(value, entry.cost_usd, sim), best, threshold, None, vector)
        if expired:
            self._drop(expired)
        return Probe(None, best, threshold, refused, vector)

    # -- stores -------------------------------------------------------------------------------

    def remember(self, scope: str, prompt: str, vector: npt.NDArray[np.float32] | None, value: dict[str, Any],
                 cost_usd: float) -> None:
        """Store an answer in the background (the caller has its response already)."""
        task = asyncio.get_running_loop().create_task(self._remember(scope, prompt, vector, value, cost_usd))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _remember(self, scope: str, prompt: str, vector: npt.NDArray[np.float32] | None,
                        value: dict[str, Any], cost_usd: float) -> None:
        try:
            if vector is None:
                vector = (await self.embedder.embed_async([prompt]))[0]
            self.store(scope, prompt, vector, value, cost_usd)
        except Exception as exc:  # the cache is an optimisation: a failed store costs a future miss
            _log.warning("semantic cache: entry not stored: %s", exc)

    def store(self, scope: str, prompt: str, vector: npt.NDArray[np.float32], value: dict[str, Any],
              cost_usd: float) -> None:
        """Store an answer now (synchronously)."""
        f = dumps(facts(prompt).to_json())
        ident = self._store.add(scope, vector, f, dumps(value), float(cost_usd), self._clock.time() + self._ttl)
        self._sync()
        if ident not in self._scope_of:  # the store's ids are ours; _sync normally picked it up
            self._index(scope).add(ident, vector)
            self._scope_of[ident] = scope

    async def drain(self) -> None:
        """Wait for background stores (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        """Finish background stores, then close the store and the embedder."""
        await self.drain()
        self._store.close()
        self.embedder.close()
