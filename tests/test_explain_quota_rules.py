"""Explain and `engine test` judge conditional and per-provider quotas as live traffic does:
a quota whose `when` is false does not apply, and a `by_provider` map limits each provider by
its own entry (issue 14: the dry-run tools must agree with the live ledger)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import QuotaExceeded
from engine.policy.api import compile_policy, load_policy_text
from engine.routing.features import Request
from engine.routing.why import explain_request
from engine.runtime.router import Router

POLICY = """
version: 1
providers:
  cheap: {adapter: simulated, time_scale: 0, failure_rate: 0}
  pricey: {adapter: simulated, time_scale: 0, failure_rate: 0}
models:
  small: {provider: cheap, price: {input: 0.1, output: 0.1}, context_window: 8000}
  large: {provider: pricey, price: {input: 5, output: 5}, context_window: 8000}
routes:
  - {name: default, strategy: cheapest, candidates: [small], fallback: [large]}
quotas:
  - {name: free-tokens, scope: [key], window: day, when: "meta.tier == 'free'", limit: {tokens: 1000}}
  - {name: vendor-requests, window: day, limit: {by_provider: {cheap: {requests: 2}}}}
"""


def _report(meta: dict[str, str], used: dict[str, dict[str, float]]) -> dict[str, object]:
    compiled = compile_policy(load_policy_text(POLICY, env={}))
    request = Request.of("hello there", max_tokens=100, meta=meta)
    return explain_request(compiled, request, quota_used=used).report


def _quota(report: dict[str, object], name: str) -> dict[str, object]:
    quotas = report["quotas"]
    assert isinstance(quotas, list)
    return next(q for q in quotas if q["name"] == name)


def test_a_conditional_quota_applies_only_where_its_when_holds() -> None:
    used = {"free-tokens": {"tokens": 950}}
    free = _report({"key": "k1", "tier": "free"}, used)
    assert free["refused"] == "quota"
    assert _quota(free, "free-tokens")["applies"] is True
    paid = _report({"key": "k1", "tier": "paid"}, used)
    assert paid["refused"] is False and paid["plan"][0] == "small"  # type: ignore[index]
    assert _quota(paid, "free-tokens")["applies"] is False
    assert "when is false" in str(_quota(paid, "free-tokens")["verdict"])


def test_a_provider_map_limits_only_the_provider_it_names() -> None:
    report = _report({}, {"vendor-requests": {"cheap": {"requests": 2}}})
    assert report["refused"] is False
    assert report["plan"][0] == "large"  # type: ignore[index]  # cheap is out of requests, pricey is not limited


async def test_live_traffic_agrees_with_the_dry_run(tmp_path: Path) -> None:
    policy = load_policy_text(POLICY, env={})
    async with Router(policy, log_path=tmp_path / "log.db") as router:
        for _ in range(2):
            assert (await router.generate("hello there", max_tokens=100)).model == "small"
        assert (await router.generate("hello there", max_tokens=100)).model == "large"  # the map, live
        free = {"key": "k1", "tier": "free"}
        with pytest.raises(QuotaExceeded):  # 1000 tokens: this estimate (prompt + 2000) alone is over
            await router.generate("hello there", max_tokens=2000, meta=free)
        r = await router.generate("hello there", max_tokens=2000, meta={"key": "k1", "tier": "paid"})
        assert r.model == "large"
