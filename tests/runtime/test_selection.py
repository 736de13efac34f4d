"""Selection through the full runtime: the model served is the one the policy picks."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import QuotaExceeded, RequestError, RoutingRefused
from engine.runtime.router import Router
from tests.runtime.conftest import RowsFn, make_policy, sims

ROUTED = """
version: 1
providers:
  p: {adapter: simulated}
models:
  cheap: {provider: p, price: {input: 0.1, output: 0.2}, context_window: 8000, scores: {chat: 3, code: 2}}
  coder: {provider: p, price: {input: 3, output: 15}, context_window: 200000, scores: {chat: 4, code: 5}}
  fast: {provider: p, price: {input: 1, output: 1}, context_window: 32000, scores: {chat: 4, code: 3},
         latency: {p50_ms: 100, p95_ms: 300}}
signals:
  code: {regex: ['```', 'def \\w+\\(']}
query_types:
  - {type: code, when: signals.code}
  - {type: chat}
routes:
  - {name: code, when: "query_type == 'code'", require: {score: 5}, fallback: [cheap]}
  - {name: vip, when: "meta.tier == 'vip'", strategy: fastest, require: {score: 4}}
  - {name: default, strategy: cheapest}
quotas:
  - {name: daily, scope: [tenant], window: day, limit: {requests: 2}}
"""


@pytest.mark.parametrize(("prompt", "meta", "route", "model"), [
    ("```py\ndef f(): pass\n```", {}, "code", "coder"),
    ("hello", {"tier": "vip"}, "vip", "fast"),
    ("hello", {}, "default", "cheap"),
    ("word " * 10000, {}, "default", "fast"),  # too long for cheap's 8000 window
])
async def test_served_model_matches_the_decision(prompt: str, meta: dict[str, str], route: str, model: str) -> None:
    p = make_policy(base=ROUTED)
    router = Router(p, log_path=None, adapters=sims(p))
    assert router.explain(prompt, meta=meta).model == model
    r = await router.generate(prompt, meta=meta, max_tokens=100)
    assert (r.route, r.model) == (route, model)
    await router.aclose()


async def test_quota_reject_names_the_quota_and_is_logged(tmp_path: Path, rows: RowsFn) -> None:
    p = make_policy(base=ROUTED)
    router = Router(p, log_path=tmp_path / "log.db", adapters=sims(p))
    for _ in range(2):
        await router.generate("hi", meta={"tenant": "t"})
    with pytest.raises(QuotaExceeded) as e:
        await router.generate("hi", meta={"tenant": "t"})
    assert e.value.quota == "daily" and "resets at" in str(e.value)
    await router.generate("hi", meta={"tenant": "other"})  # other tenants are unaffected
    await router.aclose()
    assert [r["outcome"] for r in rows("requests")] == ["served", "served", "refused_quota", "served"]


async def test_bad_requests_are_rejected_before_dispatch_and_logged(tmp_path: Path, rows: RowsFn) -> None:
    p = make_policy(base=ROUTED)
    ads = sims(p)
    router = Router(p, log_path=tmp_path / "log.db", adapters=ads)
    with pytest.raises(RequestError):
        await router.generate("   ")
    with pytest.raises(RequestError):
        await router.generate("hi", max_tokens=0)
    with pytest.raises(RequestError, match="unknown model or route"):
        await router.generate("hi", model="nope")
    assert sum(a.calls for a in ads.values()) == 0
    await router.aclose()
    assert [r["outcome"] for r in rows("requests")] == ["bad_request"] * 3


async def test_pinning_a_model_or_a_route() -> None:
    p = make_policy(base=ROUTED)
    router = Router(p, log_path=None, adapters=sims(p))
    assert (await router.generate("hello", model="coder")).model == "coder"
    assert (await router.generate("hello", model="vip")).model == "fast"
    await router.aclose()


async def test_refusal_when_nothing_fits() -> None:
    p = make_policy(base=ROUTED.replace("context_window: 200000", "context_window: 20000"))
    router = Router(p, log_path=None, adapters=sims(p))
    with pytest.raises(RoutingRefused, match="context window"):
        await router.generate("word " * 40000)
    await router.aclose()
