"""The EU scenario of issue 14: a residency route under an exhausted quota never serves a model
outside its candidates, and validate, explain and live traffic agree on what it serves.

The worked example policy (policies/platform.example.yaml) runs here with its providers replaced by
simulated ones of the same names, so live traffic goes through the real router, quota ledger and
adapters without a network.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from engine.errors import QuotaExceeded
from engine.policy.api import analyze_text, compile_policy
from engine.policy.model import Policy, downgrade_reach
from engine.policy.testing import build_request
from engine.routing.why import explain_request
from engine.runtime.quotas import QuotaContext
from engine.runtime.router import Router

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "policies" / "platform.example.yaml"
EU = {"region": "EU", "tenant": "acme"}
PROMPT = "Bonjour, peux-tu m'aider à écrire un e-mail ?"


def _simulated(text: str) -> str:
    names = re.findall(r"^  ([a-z][a-z0-9-]*):[^\n]*\n    adapter:", text, re.MULTILINE)
    sims = "".join(f"  {n}:\n    adapter: simulated\n    time_scale: 0\n    failure_rate: 0\n" for n in names)
    return re.sub(r"^providers:\n.*?(?=^models:)", "providers:\n" + sims + "\n", text, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def policy() -> Policy:
    a = analyze_text(_simulated(EXAMPLE.read_text("utf-8")), "platform-simulated.yaml", env={})
    assert a.policy is not None and not a.errors, [d.format() for d in a.diagnostics]
    return a.policy


def test_the_cheapest_model_of_the_policy_is_outside_the_eu_route(policy: Policy) -> None:
    # what the old downgrade ("cheapest model of the whole policy") would have picked
    cheapest = min(policy.models.values(), key=lambda m: m.est_cost(20, 500))
    eu = next(r for r in policy.routes if r.name == "eu-residency")
    assert cheapest.name == "gemini-2.0-flash-lite"
    assert cheapest.name not in (eu.candidates or ())


def test_validate_reports_a_downgrade_reach_inside_the_candidates(policy: Policy) -> None:
    eu = next(r for r in policy.routes if r.name == "eu-residency")
    assert downgrade_reach(policy, eu) == ("codestral-latest", "mistral-large-latest")
    assert set(downgrade_reach(policy, eu)) <= set(eu.candidates or ())


@pytest.mark.parametrize(("spent", "served"), [(0.0, "mistral-large-latest"), (19.999, "codestral-latest"),
                                                (20.0, None)])
async def test_explain_and_live_traffic_agree_under_the_quota(policy: Policy, spent: float,
                                                              served: str | None) -> None:
    explained = explain_request(compile_policy(policy), build_request({"prompt": PROMPT, "max_tokens": 500,
                                                                       "meta": EU}),
                                quota_used={"tenant-daily-spend": {"cost_usd": spent}} if spent else None)
    assert explained.decision.model == served
    assert explained.report["downgraded"] is (spent == 19.999)
    async with Router(policy, log_path=None, quota_path=None) as router:
        assert router.quotas is not None
        if spent:
            ctx = QuotaContext("acme", None, "mistral-large-latest", "mistral-eu")
            router.quotas.settle(router.quotas.reserve(ctx, 0, spent), 0, spent)
        if served is None:
            with pytest.raises(QuotaExceeded) as info:
                await router.generate(PROMPT, max_tokens=500, meta=EU)
            assert info.value.quota == "tenant-daily-spend"
            return
        r = await router.generate(PROMPT, max_tokens=500, meta=EU)
    assert (r.route, r.model, r.downgraded) == ("eu-residency", served, spent == 19.999)


async def test_no_eu_request_leaves_the_route_whatever_the_spend(policy: Policy) -> None:
    eu = set(next(r for r in policy.routes if r.name == "eu-residency").candidates or ())
    async with Router(policy, log_path=None, quota_path=None) as router:
        assert router.quotas is not None
        ctx = QuotaContext("acme", None, "codestral-latest", "mistral-eu")
        served: list[str] = []
        refused = 0
        for i in range(60):  # halve what is left each time: through every model's threshold, then to none
            try:  # a new prompt each time: the policy caches chat, and a cache hit costs nothing
                r = await router.generate(f"{PROMPT} ({i})", max_tokens=500, meta=EU)
                served.append(r.model)
            except QuotaExceeded:
                refused += 1
                if refused == 3:
                    break
            left = router.quotas.remaining("tenant-daily-spend", ctx)["cost_usd"]
            router.quotas.settle(router.quotas.reserve(ctx, 0, left / 2), 0, left / 2)
    assert set(served) <= eu and {"mistral-large-latest", "codestral-latest"} <= set(served)
    assert refused > 0


def test_a_single_request_larger_than_the_whole_limit_says_so() -> None:
    err = QuotaExceeded("tenant-daily-spend", "tenant=acme", "cost_usd", 20.0, 0.0, 0.0, requested=25.0)
    assert "exceeds the whole limit" in str(err) and "resets at" not in str(err)
    err = QuotaExceeded("tenant-daily-spend", "tenant=acme", "cost_usd", 20.0, 19.99, 0.0, requested=0.5)
    assert "resets at" in str(err)


@pytest.mark.parametrize(("limit", "used", "tokens", "cost"), [
    ({"cost_usd": 1.0}, {"cost_usd": 0.6}, 100, 0.39),
    ({"cost_usd": 1.0}, {"cost_usd": 0.6}, 100, 0.41),
    ({"tokens": 1000}, {"tokens": 900}, 100, 0.0),
    ({"tokens": 1000}, {"tokens": 900}, 101, 0.0),
    ({"requests": 3}, {"requests": 2}, 1, 0.0),
    ({"requests": 3}, {"requests": 3}, 1, 0.0),
    ({"cost_usd": 1.0}, {"cost_usd": 0.0}, 10, 1.5),  # one request larger than the whole limit
])
@pytest.mark.parametrize("scope", [[], ["tenant"], ["tenant", "model"]])
def test_stated_usage_in_a_dry_run_is_judged_like_the_live_ledger(limit: dict[str, float], used: dict[str, float],
                                                                 tokens: int, cost: float, scope: list[str]) -> None:
    from engine.policy.model import Quota, QuotaLimit
    from engine.routing.why import dry_quota_probe
    from engine.runtime.clock import ManualClock
    from engine.runtime.quotas import QuotaManager

    policy = analyze_text(_simulated(EXAMPLE.read_text("utf-8")), "p.yaml", env={}).policy
    assert policy is not None
    quota = Quota(name="q", scope=tuple(scope), window="day", limit=QuotaLimit(**limit))  # type: ignore[arg-type]
    live = QuotaManager([quota], path=None, clock=ManualClock())
    ctx = QuotaContext("acme", None, "codestral-latest", "mistral-eu")
    for _ in range(int(used.get("requests", 1))):  # the live ledger counts a request per reservation
        live.settle(live.reserve(ctx, 0, 0.0), 0, 0.0)
    if "cost_usd" in used or "tokens" in used:
        live.settle(live.reserve(ctx, 0, 0.0), int(used.get("tokens", 0)), used.get("cost_usd", 0.0))
    dry_policy = dataclasses.replace(policy, quotas=(quota,))
    n = int(used.get("requests", 1)) + (1 if "cost_usd" in used or "tokens" in used else 0)
    stated = {**used, "requests": n}
    dry = dry_quota_probe(dry_policy, {"tenant": "acme"}, {"q": stated})("codestral-latest", tokens, cost)
    block = live.check(ctx, tokens, cost)
    assert (dry is None) == (block is None), (dry, block)
    if block is not None and dry is not None:
        assert dry[0].startswith(f"quota 'q' ({block.scope_key or 'global'}, on_exceed=reject): {block.measure} ")
        assert ("alone exceeds the whole limit" in dry[0]) == (block.requested > block.limit)
