"""Semantic cache entries in Redis: replicas share paraphrase hits; scopes, expiry, restarts, lost data.

Each "replica" is a Router of its own on the same policy and one real redis-server (tests/redis_fixture.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml

from engine import Router
from engine.policy.model import SemanticCacheConfig, StateConfig
from engine.runtime.backends import redis_semantic
from engine.runtime.backends.redis_conn import RedisConn
from engine.runtime.backends.redis_semantic import RedisEntryStore
from engine.runtime.clock import ManualClock, SystemClock
from engine.semantic.cache import SemanticCache
from engine.semantic.embedders import HashingEmbedder
from engine.semantic.store import Entry, StoreError, StoreReset
from tests.redis_fixture import RedisServer
from tests.runtime.test_surface import WEATHER
from tests.test_semantic_cache import DEFAULT, PARAPHRASE, Q, ask

OTHER = "Name three rivers that flow through Germany."


def policy_file(tmp_path: Path, url: str, *, ttl_s: float = 3600, max_entries: int = 10_000,
                quotas: str = "reject") -> Path:
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["cache"].pop("when", None)
    doc["cache"].update(ttl_s=ttl_s, max_entries=max_entries,
                        semantic={"embedder": "hashing", "threshold": 0.5})
    doc["state"] = {"backend": "redis", "url": url, "timeout_ms": 2000, "retry_s": 0.2,
                    "on_failure": {"quotas": quotas}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def replica(path: Path, clock: ManualClock | None = None) -> Router:
    return Router.from_file(path, log_path=None, clock=clock)


def entry_keys(url: str) -> list[bytes]:
    return sorted(redis.Redis.from_url(url).keys("engine:s:*:e:*"))


async def test_a_paraphrase_answered_by_one_replica_is_a_semantic_hit_on_another(tmp_path: Path,
                                                                                 redis_server: RedisServer) -> None:
    path = policy_file(tmp_path, redis_server.url)
    async with replica(path) as a, replica(path) as b:
        assert a.semantic is not None and b.semantic is not None
        first = await a.generate(Q, max_tokens=60, temperature=0, meta={"tenant": "acme"})
        await a.semantic.drain()
        assert len(a.semantic) == 1 and len(entry_keys(redis_server.url)) == 1
        hit = await ask(b, PARAPHRASE)
        exact = await ask(b, Q)  # the exact cache is shared too: no embedding, no semantic lookup
    assert not first.cached
    assert hit.cached and hit.cache_kind == "semantic" and hit.text == first.text and hit.cost_usd == 0.0
    assert hit.similarity is not None and hit.similarity >= 0.5
    assert b.semantic.hits == 1 and b.semantic.saved_cost_usd == pytest.approx(first.cost_usd)
    assert exact.cached and exact.cache_kind == "exact" and b.semantic.lookups == 1


@pytest.mark.parametrize(("change", "kwargs"), [
    ("tenant", {"tenant": "globex"}),
    ("params", {"max_tokens": 61}),
    ("route", {}),
    ("tools", {"tools": [WEATHER]}),
    ("output format", {"response_format": {"type": "json_object"}}),
])
async def test_scopes_hold_across_replicas(tmp_path: Path, redis_server: RedisServer, change: str,
                                           kwargs: dict[str, Any]) -> None:
    path = policy_file(tmp_path, redis_server.url)
    async with replica(path) as a, replica(path) as b:
        first = await ask(a, Q)
        if change == "route":  # pin another route: another plan
            kwargs = {"model": next(rt.name for rt in b.policy.routes if rt.name != first.route)}
        other = await ask(b, PARAPHRASE, **kwargs)
        same = await ask(b, PARAPHRASE)
    assert not other.cached, change
    assert same.cached and same.cache_kind == "semantic" and same.text == first.text


async def test_an_expired_entry_is_refused_and_deleted_for_every_replica(tmp_path: Path,
                                                                        redis_server: RedisServer) -> None:
    path = policy_file(tmp_path, redis_server.url, ttl_s=60)
    clock_a, clock_b = ManualClock(), ManualClock()
    async with replica(path, clock_a) as a, replica(path, clock_b) as b:
        await ask(a, Q)
        (key,) = entry_keys(redis_server.url)
        assert 0 < redis.Redis.from_url(redis_server.url).pttl(key) <= 60_000  # Redis expires it on its own too
        clock_a.advance(61)
        clock_b.advance(61)
        late = await ask(b, PARAPHRASE)
        assert a.semantic is not None and b.semantic is not None
        await b.semantic.drain()
        # B saw it expired and deleted it, for A as well; what B holds now is its own fresh answer
        assert key not in entry_keys(redis_server.url) and len(entry_keys(redis_server.url)) == 1
        assert await a.semantic._store.get(1) is None
        again = await ask(a, PARAPHRASE)
    assert not late.cached
    assert again.cached and again.text == late.text  # B's answer, not the expired one


async def test_entries_redis_expired_are_not_loaded(tmp_path: Path, redis_server: RedisServer) -> None:
    path = policy_file(tmp_path, redis_server.url, ttl_s=0.2)
    async with replica(path) as a:
        await ask(a, Q)
    await asyncio.sleep(0.4)  # past the entry's Redis expiry
    async with replica(path) as b:
        res = await ask(b, PARAPHRASE)
        assert b.semantic is not None
        assert not res.cached and len(b.semantic) == 1  # only its own new entry


async def test_a_restarted_replica_rebuilds_its_index_from_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    path = policy_file(tmp_path, redis_server.url)
    async with replica(path) as a:
        first = await ask(a, Q)
        await ask(a, OTHER)
        await ask(a, Q, tenant="globex")
    async with replica(path) as again:
        hit = await ask(again, PARAPHRASE)
        assert again.semantic is not None
        assert hit.cached and hit.cache_kind == "semantic" and hit.text == first.text
        assert len(again.semantic) == 3


async def test_a_redis_that_lost_its_data_never_serves_a_reused_id(tmp_path: Path,
                                                                   redis_server: RedisServer) -> None:
    path = policy_file(tmp_path, redis_server.url)
    clock_b = ManualClock()
    async with replica(path) as a, replica(path, clock_b) as b:
        assert b.semantic is not None
        await ask(a, Q)
        await ask(b, "Tell me a joke about penguins.")  # B's index now holds A's entry, id 1
        redis_server.flush()  # Redis lost everything: ids start again at 1
        await ask(a, OTHER)  # id 1 again, same scope, another prompt
        # B's clock stands still, so it has not looked at Redis since: id 1 in its index is stale
        stale = await ask(b, PARAPHRASE)
        assert not stale.cached and len(b.semantic) == 1  # the stale id is dropped (B's own id 2 is not looked at)
        assert any(k.endswith(b":e:1") for k in entry_keys(redis_server.url))  # from B's index only: A's new 1 stays
        clock_b.advance(1)  # due for a look: the new epoch is noticed, the index rebuilt from Redis
        fresh = await ask(b, "Name three rivers that flow through Germany, please.")
    assert fresh.cached and fresh.cache_kind == "semantic"


async def test_a_dead_redis_costs_semantic_misses_not_requests(tmp_path: Path, redis_server: RedisServer) -> None:
    path = policy_file(tmp_path, redis_server.url, quotas="local")
    async with replica(path) as a:
        assert a.semantic is not None
        first = await ask(a, Q)
        redis_server.stop()
        down = await ask(a, PARAPHRASE)  # the index has the entry, Redis cannot give it: a miss
    assert not first.cached and not down.cached and down.text
    assert a.semantic.errors == 1 and a.semantic.hits == 0


# -- the store on its own ------------------------------------------------------------------------------


def _store(url: str, **kw: Any) -> RedisEntryStore:
    conn = RedisConn(StateConfig(backend="redis", url=url, timeout_ms=2000, retry_s=0.2))
    return RedisEntryStore(conn, "test-8", ttl_s=kw.pop("ttl_s", 60), max_entries=kw.pop("max_entries", 1000),
                           owns_conn=True, **kw)


async def _all_since(store: RedisEntryStore, last_id: int) -> list[Entry]:
    out: list[Entry] = []
    while batch := await store.since(out[-1].id if out else last_id):
        out += batch
    return out


def _vec(i: int) -> np.ndarray:
    v = np.zeros(8, dtype=np.float32)
    v[i % 8] = 1.0
    return v


async def test_since_walks_in_batches_in_id_order_and_deletes_are_seen(redis_server: RedisServer,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_semantic, "_BATCH", 7)
    writer, reader = _store(redis_server.url), _store(redis_server.url)
    ids = [await writer.add(f"s{i % 3}", _vec(i), "{}", f'{{"text":"a{i}"}}', 0.001 * i, 1e12) for i in range(20)]
    assert ids == list(range(1, 21))
    assert [e.id for e in await _store(redis_server.url).since(0)] == ids[:7]  # a batch at a time
    got = await _all_since(reader, 0)
    assert [e.id for e in got] == ids
    e = got[4]
    assert (e.scope, e.value, e.cost_usd, e.facts) == ("s1", '{"text":"a4"}', pytest.approx(0.004), "{}")
    assert np.array_equal(e.vector, _vec(4))
    assert await reader.since(20) == []  # nothing new: one round trip, nothing read
    await writer.delete([3, 21, 5])
    assert await reader.get(3) is None and (await reader.get(4)) is not None
    late = _store(redis_server.url)
    assert [x.id for x in await _all_since(late, 0)] == [i for i in ids if i not in (3, 5)]
    new = await writer.add("s0", _vec(0), "{}", "{}", 0.0, 1e12)
    assert [x.id for x in await reader.since(20)] == [new]
    for s in (writer, reader, late):
        await s.aclose()


async def test_the_shared_entries_are_bounded_by_max_entries(redis_server: RedisServer) -> None:
    store = _store(redis_server.url, max_entries=5)
    for i in range(8):
        await store.add("s", _vec(i), "{}", "{}", 0.0, 1e12)
    assert [e.id for e in await _store(redis_server.url).since(0)] == [4, 5, 6, 7, 8]
    assert len(entry_keys(redis_server.url)) == 5
    await store.aclose()


async def test_a_flush_is_a_reset_and_a_dead_redis_an_error(redis_server: RedisServer) -> None:
    writer, reader = _store(redis_server.url), _store(redis_server.url)
    await writer.add("s", _vec(0), "{}", "{}", 0.0, 1e12)
    assert len(await reader.since(0)) == 1
    redis_server.flush()
    with pytest.raises(StoreReset):  # the counter went back below what the reader saw
        await reader.since(1)
    assert await reader.since(0) == []
    redis_server.flush()
    for _ in range(3):  # the counter passes what the reader saw: only the epoch tells
        await writer.add("s", _vec(1), "{}", "{}", 0.0, 1e12)
    with pytest.raises(StoreReset):
        await reader.since(1)
    assert [e.id for e in await reader.since(0)] == [1, 2, 3]
    redis_server.stop()
    with pytest.raises(StoreError):
        await writer.add("s", _vec(0), "{}", "{}", 0.0, 1e12)
    for s in (writer, reader):
        await s.aclose()


# -- a replica's first look at a big shared store ------------------------------------------------------


class Gated:
    """A store whose `since` waits for a gate: a replica's first look at a big shared store, made slow."""

    def __init__(self, inner: RedisEntryStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.poll_s, self.wait_s = inner.poll_s, 0.05

    async def since(self, last_id: int) -> list[Entry]:
        await self.gate.wait()
        return await self.inner.since(last_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _semantic(store: Any) -> SemanticCache:
    return SemanticCache(SemanticCacheConfig(embedder="hashing", threshold=0.5), HashingEmbedder(), store,
                         clock=SystemClock(), ttl_s=60, max_entries=100)


async def test_a_lookup_does_not_wait_for_a_slow_catch_up_and_batches_are_indexed_as_they_come(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_semantic, "_BATCH", 2)
    writer = _semantic(_store(redis_server.url))
    emb = HashingEmbedder()
    for i, prompt in enumerate([Q, OTHER, "Explain photosynthesis.", "What is TCP?", "Sort a list in Go."]):
        await writer.store("scope", prompt, emb.embed([prompt])[0], {"text": f"answer {i}"}, 0.01)
    gated = Gated(_store(redis_server.url))
    reader = _semantic(gated)
    slow = await asyncio.wait_for(reader.probe("scope", PARAPHRASE, "creative"), 10)  # hangs if it waited
    assert slow.hit is None and len(reader) == 0
    gated.gate.set()
    await reader.drain()
    assert len(reader) == 5  # three batches of at most two
    hit = await reader.probe("scope", PARAPHRASE, "creative")
    assert hit.hit is not None and hit.hit.value == {"text": "answer 0"}
    for c in (writer, reader):
        await c.aclose()
