"""Model groups in live traffic: the served member is what explain and replay compute for the same
request id, traffic is spread by the weights, and clients can pin a group by its name."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from engine.errors import RequestError
from engine.policy.api import compile_policy, load_policy_text
from engine.policy.testing import build_request
from engine.routing.decide import decide
from engine.runtime.router import Router

POLICY = """
version: 1
providers:
  east: {adapter: simulated, time_scale: 0, failure_rate: 0}
  west: {adapter: simulated, time_scale: 0, failure_rate: 0}
models:
  mini-east: {provider: east, id: mini, price: {input: 1, output: 1}, context_window: 8000, scores: {chat: 4}}
  mini-west: {provider: west, id: mini, price: {input: 1, output: 1}, context_window: 8000, scores: {chat: 4}}
  big: {provider: east, price: {input: 5, output: 5}, context_window: 100000, scores: {chat: 5}}
groups:
  mini:
    models: [mini-east, mini-west]
    weights: {mini-east: 3, mini-west: 1}
routes:
  - name: default
    candidates: [mini, big]
    strategy: cheapest
"""


async def test_live_member_matches_explain_for_the_same_request_id() -> None:
    policy = load_policy_text(POLICY, env={})
    compiled = compile_policy(policy)
    served: Counter[str] = Counter()
    async with Router(policy, log_path=None, quota_path=None) as router:
        for i in range(200):
            r = await router.generate(f"hello {i}", max_tokens=50)
            served[r.model] += 1
            dry = decide(compiled, build_request({"prompt": f"hello {i}", "max_tokens": 50,
                                                  "request_id": r.request_id}))
            assert dry.plan[0] == r.model
        pinned = await router.generate("hello", max_tokens=50, model="mini")
        assert pinned.model in ("mini-east", "mini-west")
        with pytest.raises(RequestError, match="unknown model or route"):
            await router.generate("hello", max_tokens=50, model="minis")
    assert set(served) == {"mini-east", "mini-west"}
    assert served["mini-east"] > served["mini-west"]  # 3:1 by weight


async def test_replay_repeats_group_order_and_reads_needs_from_the_log(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    from engine.ops.replay import _features, replay

    db = Path(str(tmp_path)) / "log.db"
    policy = load_policy_text(POLICY, env={})
    async with Router(policy, log_path=db, quota_path=None) as router:
        for i in range(30):
            await router.generate(f"hello {i}", max_tokens=50)
    report = replay(db, policy, baseline=policy)
    assert report.replayed == 30 and report.model_changed == 0 and report.runtime_shaped == 0
    with sqlite3.connect(db) as conn:
        logged = conn.execute("select features from requests limit 1").fetchone()[0]
    assert json.loads(logged)["needs"] == []
    row = {"id": "r-1", "prompt_tokens": 10, "max_tokens": 50, "temperature": 0.7, "stream": 1, "meta": {},
           "features": {"has_tools": True, "needs": ["tools", "json"]}}
    assert _features(compile_policy(policy), row, {}, "chat").needs == {"tools", "json"}
    older = {**row, "features": {"has_tools": True, "has_images": False}}  # logged before needs were
    assert _features(compile_policy(policy), older, {}, "chat").needs == {"tools", "streaming"}
