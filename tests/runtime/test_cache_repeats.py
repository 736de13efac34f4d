"""Repeats of a plain request go straight to their cache entry (`engine.runtime.hitmemo`).

The reference is the same Router with the memo switched off: every answer, counter and
decision-log row must be the same either way; only the work per hit differs.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.conversation import Message
from engine.errors import RequestError
from engine.runtime.clock import ManualClock
from engine.runtime.hitmemo import HitMemo, Known, fingerprint
from engine.runtime.router import Router
from tests.runtime.conftest import make_policy, sims

CACHED = """
cache: {enabled: true, ttl_s: 60, max_entries: 100, scope: tenant, when: "temperature == 0"}
"""
VOLATILE = ("id", "ts", "latency_ms")


def _rows(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    out = [{k: v for k, v in dict(r).items() if k not in VOLATILE} for r in db.execute(
        "SELECT * FROM requests ORDER BY ts, rowid")]
    db.close()
    return out


CALLS: list[dict[str, Any]] = [
    {"prompt": "what is a cache?", "temperature": 0},
    {"prompt": "what is a cache?", "temperature": 0},
    {"prompt": "what is a cache?", "temperature": 0.0},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is a cache?"}],
     "temperature": 0, "meta": {"tenant": "acme", "tier": 2}},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is a cache?"}],
     "temperature": 0, "meta": {"tenant": "acme", "tier": 2}},
    {"messages": [Message("system", "be brief"), Message("user", "what is a cache?")],
     "temperature": 0, "meta": {"tenant": "acme", "tier": 2}},
    {"messages": [("user", "pinned")], "temperature": 0, "model": "b-mid"},
    {"messages": [{"role": "user", "content": "pinned"}], "temperature": 0, "model": "b-mid"},
    {"messages": [{"role": "user", "content": "pinned"}], "temperature": 0, "model": "b-mid"},
    {"prompt": "with tools", "temperature": 0, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    {"prompt": "with tools", "temperature": 0, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    {"prompt": "what is a cache?", "temperature": 0.7},
    {"prompt": "what is a cache?", "temperature": 0, "stop": ["\n"]},
    {"prompt": "what is a cache?", "temperature": 0, "stop": ("\n",)},
]


async def _run(tmp: Path, memo: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    p = make_policy(CACHED)
    ads = sims(p)
    router = Router(p, log_path=tmp / "log.db", adapters=ads)
    if not memo:
        router._memo = None
    answers = []
    for kw in CALLS:
        r = await router.generate(**kw)
        answers.append({f.name: getattr(r, f.name) for f in dataclasses.fields(r)
                        if f.name not in ("request_id", "latency_ms")})
    assert router.cache is not None
    counts = {"hits": router.cache.hits, "misses": router.cache.misses,
              "upstream": sum(a.calls for a in ads.values())}
    await router.aclose()
    return answers, _rows(tmp / "log.db"), counts


async def test_a_repeat_answers_counts_and_logs_as_the_full_path_does(tmp_path: Path) -> None:
    (tmp_path / "memo").mkdir()
    (tmp_path / "full").mkdir()
    fast = await _run(tmp_path / "memo", memo=True)
    full = await _run(tmp_path / "full", memo=False)
    assert fast[0] == full[0]
    assert fast[1] == full[1]
    assert fast[2] == full[2]
    # the scenario does exercise hits: every repeat above is one (tools included, by the full path)
    assert fast[2]["hits"] == 8 and [r["cache_hit"] for r in fast[1]].count(1) == 8


async def test_repeats_skip_building_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.routing import features

    p = make_policy(CACHED)
    router = Router(p, log_path=None, adapters=sims(p))
    built = 0
    of = features.Request.of.__func__  # type: ignore[attr-defined]

    def counting(cls: Any, *a: Any, **kw: Any) -> Any:
        nonlocal built
        built += 1
        return of(cls, *a, **kw)

    monkeypatch.setattr(features.Request, "of", classmethod(counting))
    for _ in range(5):
        r = await router.generate(messages=[{"role": "user", "content": "hello"}], temperature=0)
    assert r.cached and built == 1  # the first request only: the repeats went by the memo
    await router.aclose()


async def test_changing_the_callers_objects_later_never_serves_the_old_answer() -> None:
    p = make_policy(CACHED)
    ads = sims(p)
    router = Router(p, log_path=None, adapters=ads)
    msgs = [{"role": "user", "content": "first question"}]
    meta = {"tenant": "a"}
    await router.generate(messages=msgs, temperature=0, meta=meta)
    msgs[0]["content"] = "second question"
    r = await router.generate(messages=msgs, temperature=0, meta=meta)
    assert not r.cached
    meta["tenant"] = "b"
    r = await router.generate(messages=msgs, temperature=0, meta=meta)
    assert not r.cached  # scope: tenant
    assert sum(a.calls for a in ads.values()) == 3
    await router.aclose()


async def test_a_value_the_full_path_refuses_is_refused_on_a_repeat_too() -> None:
    p = make_policy(CACHED)
    router = Router(p, log_path=None, adapters=sims(p))
    await router.generate("q", temperature=0, max_tokens=10)
    assert (await router.generate("q", temperature=0, max_tokens=10)).cached
    with pytest.raises(RequestError, match="temperature"):
        await router.generate("q", temperature=False, max_tokens=10)  # 0 == False, but not to Request.of
    with pytest.raises(RequestError, match="max_tokens"):
        await router.generate("q", temperature=0, max_tokens=10.0)  # type: ignore[arg-type]
    await router.aclose()


async def test_an_expired_entry_goes_by_the_full_path_and_is_stored_again() -> None:
    p = make_policy(CACHED)
    ads = sims(p)
    clock = ManualClock()
    router = Router(p, log_path=None, adapters=ads, clock=clock)
    await router.generate("q", temperature=0)
    assert (await router.generate("q", temperature=0)).cached
    clock.advance(61)
    assert not (await router.generate("q", temperature=0)).cached
    assert (await router.generate("q", temperature=0)).cached
    assert router.cache is not None and (router.cache.hits, router.cache.misses) == (2, 2)
    assert sum(a.calls for a in ads.values()) == 2
    await router.aclose()


def test_only_plain_calls_get_a_fingerprint() -> None:
    plain = fingerprint(None, [{"role": "user", "content": "hi"}], 10, 0.0, None, {"tenant": "a"}, None)
    assert plain is not None and hash(plain) is not None
    assert fingerprint("hi", None, 10, 0.0, ["x"], None, "m") is not None
    assert fingerprint(None, [Message("user", "hi")], 10, 0.0, None, None, None) is not None
    not_plain = [
        (None, [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], 10, 0.0, None, None, None),
        (None, [{"role": "user", "content": "hi", "extra": 1}], 10, 0.0, None, None, None),
        (None, [object()], 10, 0.0, None, None, None),
        (None, ({"role": "user", "content": "hi"} for _ in range(1)), 10, 0.0, None, None, None),
        ("hi", None, 10, 0.0, None, {"nested": {"a": 1}}, None),
        ("hi", None, 10, 0.0, [1], None, None),
        ("hi", [], 10, 0.0, None, None, None),
    ]
    for args in not_plain:
        assert fingerprint(*args) is None, args  # type: ignore[arg-type]
    # types are part of it: equal values of other types are other requests
    a = fingerprint("hi", None, 10, 0, None, {"tier": 1}, None)
    assert a != fingerprint("hi", None, 10, 0.0, None, {"tier": 1}, None)
    assert a != fingerprint("hi", None, 10, 0, None, {"tier": True}, None)
    assert fingerprint(None, [("user", "hi")], 10, 0, None, None, None) is None  # pairs: the full path


def test_the_memo_is_bounded_and_decodes_a_value_once_per_text() -> None:
    memo = HitMemo(size=2)
    for i in range(3):
        memo.put(i, Known(f"k{i}", None, "chat", {}))
    assert memo.get(0) is None and memo.get(2) is not None
    decoded = 0

    def decode(raw: str) -> dict[str, Any]:
        nonlocal decoded
        decoded += 1
        return {"raw": raw}

    first = memo.value("k", '{"a": 1}', decode)
    assert memo.value("k", '{"a": 1}', decode) is first and decoded == 1
    assert memo.value("k", '{"a": 2}', decode) == {"raw": '{"a": 2}'} and decoded == 2
