"""decide(): route matching, eligibility, ranking, fallback, runtime state."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import RequestError
from engine.policy.api import compile_policy, load_policy_text
from engine.policy.compile import CompiledPolicy
from engine.routing.decide import decide, explain
from engine.routing.features import Request, estimate_tokens
from engine.routing.state import RuntimeState

MINIMAL = (Path(__file__).parent / "policies" / "minimal.yaml").read_text()


def compiled(text: str = MINIMAL) -> CompiledPolicy:
    return compile_policy(load_policy_text(text, env={}))


def test_code_route_best_then_fallback() -> None:
    d = decide(compiled(), Request.of("fix ```def f(: pass```"))
    assert (d.route, d.query_type, d.plan) == ("code", "code", ("big", "small"))
    assert [c.eligible for c in d.candidates] == [False, True, True]
    assert d.candidates[0].reason == "score 2 for code < required 4"
    assert d.candidates[2].role == "fallback"


def test_default_route_is_cheapest_first() -> None:
    d = decide(compiled(), Request.of("hello"))
    assert (d.route, d.plan) == ("default", ("small", "big"))


def test_context_window_excludes_small_model() -> None:
    prompt = "word " * 40_000
    d = decide(compiled(), Request.of(prompt, max_tokens=100))
    assert d.plan == ("big",)
    assert "context window 8000" in (d.candidates[0].reason or "")


def test_open_circuit_and_demotion_and_unavailable() -> None:
    c = compiled()
    d = decide(c, Request.of("hello"), RuntimeState(open_circuits={"small": "50% errors"}))
    assert d.plan == ("big",)
    d = decide(c, Request.of("hello"), RuntimeState(demoted={"small": "slow"}))
    assert d.plan == ("big", "small")
    d = decide(c, Request.of("hello"), RuntimeState(unavailable={"small": "rpm", "big": "rpm"}))
    assert d.plan == () and d.refusal and "unavailable: rpm" in d.refusal


def test_quota_reject_and_downgrade() -> None:
    c = compiled()
    d = decide(c, Request.of("hello"), RuntimeState(quota_probe=lambda m, t, cost: ("daily spend", False)))
    assert d.plan == () and d.quota_refused
    only_small = RuntimeState(quota_probe=lambda m, t, cost: None if m == "small" else ("tokens", True))
    text = MINIMAL.replace("strategy: cheapest", "strategy: cheapest\n    candidates: [big]")
    d = decide(compiled(text), Request.of("hello"), only_small)
    # a downgrade never leaves the route: `small` is not among its candidates
    assert d.plan == () and d.quota_refused and not d.downgraded
    d = decide(compiled(text.replace("candidates: [big]", "candidates: [big]\n    downgrade_to: [small]")),
               Request.of("hello"), only_small)
    assert d.plan == ("small",) and d.downgraded


def test_cost_ceiling_excludes_expensive_model() -> None:
    text = MINIMAL.replace("strategy: cheapest", "strategy: cheapest\n    max_cost_usd: 0.001")
    d = decide(compiled(text), Request.of("hello", max_tokens=1000))
    assert d.plan == ("small",)
    assert "max_cost_usd" in (d.candidates[1].reason or "")


def test_fastest_uses_measured_latency() -> None:
    text = MINIMAL.replace("strategy: cheapest", "strategy: fastest")
    state = RuntimeState(latency_ms={"small": (900.0, 2000.0), "big": (100.0, 300.0)})
    assert decide(compiled(text), Request.of("hi"), state).plan == ("big", "small")


def test_explain_trace_and_json_shape() -> None:
    d = explain(compiled(), Request.of("hello", meta={"tier": "pro"}))
    out = d.as_dict()
    assert {"route", "query_type", "model", "plan", "candidates", "features", "trace"} <= set(out)
    assert out["model"] == "small" and out["features"]["meta"] == {"tier": "pro"}
    assert any("route 'default'" in t for t in out["trace"])
    # live traffic records no trace
    assert decide(compiled(), Request.of("hello")).trace == ()


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   \n"}, "prompt is empty"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "temperature": 3}, "temperature"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": []}, "empty"),
])
def test_bad_requests_are_rejected(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(RequestError, match=fragment):
        Request.of(**kwargs)  # type: ignore[arg-type]


def test_token_estimate_is_sane_across_scripts() -> None:
    assert estimate_tokens("hello world, this is a test") == 7
    assert 8 <= estimate_tokens("これは日本語のテストです。") <= 14
    assert estimate_tokens("") == 0
    assert 90_000 < estimate_tokens("lorem ipsum " * 33_000) < 110_000


# -- capability routing -----------------------------------------------------------------------------

CAPS = """
version: 1
providers:
  sim: {adapter: simulated}
models:
  textonly-1:
    provider: sim
    price: {input: 0.1, output: 0.1}
    context_window: 32000
    features: [streaming]
    scores: {chat: 4}
  vision-1:
    provider: sim
    price: {input: 1, output: 2}
    context_window: 32000
    features: [streaming, tools, json, vision]
    scores: {chat: 4}
  schema-1:
    provider: sim
    price: {input: 2, output: 4}
    context_window: 128000
    features: [streaming, tools, json, json_schema, vision]
    scores: {chat: 4}
  legacy:
    provider: sim
    price: {input: 3, output: 6}
    context_window: 1000000
    scores: {chat: 4}
routes:
  - name: default
    strategy: cheapest
    fallback: [textonly-1]
"""
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}


@pytest.mark.parametrize(("kwargs", "plan", "why"), [
    ({}, ("textonly-1", "vision-1", "schema-1", "legacy"), None),
    ({"tools": [TOOL]}, ("vision-1", "schema-1", "legacy"), "lacks tools"),
    ({"response_format": {"type": "json_object"}}, ("vision-1", "schema-1", "legacy"), "lacks json"),
    ({"response_format": SCHEMA}, ("schema-1", "legacy"), "lacks json, json_schema"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                                 {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     ("vision-1", "schema-1", "legacy"), "lacks vision"),
])
def test_a_model_without_a_needed_feature_is_ineligible(kwargs: dict[str, object], plan: tuple[str, ...],
                                                       why: str | None) -> None:
    c = compiled(CAPS)
    request = Request.of(**kwargs) if "messages" in kwargs else Request.of("hello", **kwargs)  # type: ignore[arg-type]
    d = explain(c, request)
    assert d.plan == plan
    rows = {(x.model, x.role): x for x in d.candidates}
    assert rows[("textonly-1", "candidate")].reason == why
    if why is not None:  # the fallback is held to the request's needs too
        assert rows[("textonly-1", "fallback")].reason == why
    # a model that declares no features is not held to capability checks (as before them)
    assert rows[("legacy", "candidate")].eligible


def test_streaming_is_a_need_and_explain_says_which_model_lacks_what() -> None:
    text = CAPS.replace("features: [streaming]\n", "features: []\n")
    d = explain(compiled(text), Request.of("hello", stream=True))
    assert "textonly-1" not in d.plan
    assert "skip     $.models.textonly-1: lacks streaming" in [e.format() for e in d.trace]
    assert d.features.needs == frozenset({"streaming"})


# -- downgrade stays inside the route, largest_context, groups ----------------------------------------

GROUPS = """
version: 1
providers:
  east: {adapter: simulated}
  west: {adapter: simulated}
models:
  mini-east: {provider: east, id: mini, price: {input: 1, output: 1}, context_window: 8000, scores: {chat: 4}}
  mini-west: {provider: west, id: mini, price: {input: 1, output: 1}, context_window: 8000, scores: {chat: 4}}
  huge: {provider: east, price: {input: 5, output: 5}, context_window: 1000000, scores: {chat: 3}}
  mid: {provider: west, price: {input: 2, output: 2}, context_window: 200000, scores: {chat: 5}}
groups:
  mini:
    models: [mini-east, mini-west]
    strategy: STRATEGY
    weights: WEIGHTS
routes:
  - name: long
    when: "prompt_tokens > 5000"
    strategy: largest_context
  - name: default
    candidates: [mini, mid]
    strategy: cheapest
"""


def groups(strategy: str = "weighted", weights: str = "{mini-east: 1, mini-west: 1}") -> CompiledPolicy:
    if strategy != "weighted":
        weights = "{}"
    return compiled(GROUPS.replace("STRATEGY", strategy).replace("WEIGHTS", weights))


def test_largest_context_ranks_by_window_then_cost() -> None:
    d = decide(groups(), Request.of("hi", prompt_tokens=9000, max_tokens=100))
    assert d.plan == ("huge", "mid")  # the minis' 8000 tokens do not fit 9100
    d = decide(groups(), Request.of("hi", prompt_tokens=5001, max_tokens=10))
    assert d.plan[:2] == ("huge", "mid") and set(d.plan[2:]) == {"mini-east", "mini-west"}


def test_weighted_group_is_seeded_by_request_id_and_follows_the_weights() -> None:
    c = groups(weights="{mini-east: 3, mini-west: 1}")
    first = [decide(c, Request.of("hello", request_id=f"r{i}")).plan for i in range(2000)]
    # members stay together, at the rank of the group, and the same id gives the same order
    assert all(p[2:] == ("mid",) and set(p[:2]) == {"mini-east", "mini-west"} for p in first)
    assert [decide(c, Request.of("hello", request_id=f"r{i}")).plan for i in range(50)] == first[:50]
    east = sum(p[0] == "mini-east" for p in first) / len(first)
    assert 0.70 < east < 0.80  # 3:1


def test_shuffle_least_busy_and_lowest_latency() -> None:
    c = groups("shuffle")
    heads = {decide(c, Request.of("hello", request_id=f"r{i}")).plan[0] for i in range(40)}
    assert heads == {"mini-east", "mini-west"}
    c = groups("least_busy")
    assert c.dynamic_groups
    busy = RuntimeState(in_flight={"mini-east": 7, "mini-west": 2})
    assert decide(c, Request.of("hello"), busy).plan[:2] == ("mini-west", "mini-east")
    c = groups("lowest_latency")
    slow_east = RuntimeState(latency_ms={"mini-east": (900.0, 2000.0), "mini-west": (300.0, 800.0)})
    assert decide(c, Request.of("hello"), slow_east).plan[:2] == ("mini-west", "mini-east")


def test_pinning_a_group_plans_its_members_that_fit() -> None:
    from engine.routing.decide import decide_group

    c = groups("least_busy")
    base = decide(c, Request.of("hello"))
    d = decide_group(c, "mini", base, RuntimeState(open_circuits={"mini-east": "errors"}))
    assert d is not None and d.plan == ("mini-west",)
    assert decide_group(c, "nope", base) is None
    d = decide_group(c, "mini", base, RuntimeState(open_circuits={"mini-east": "x", "mini-west": "y"}))
    assert d is not None and d.plan == () and d.refusal and "circuit open" in d.refusal


def test_downgrade_reach_is_the_route_or_its_downgrade_to() -> None:
    text = GROUPS.replace("STRATEGY", "weighted").replace("WEIGHTS", "{}") + """
quotas:
  - {name: spend, scope: [tenant], window: day, limit: {cost_usd: 1}, on_exceed: downgrade}
"""
    c = compiled(text)
    d = explain(c, Request.of("hello", meta={"tenant": "t"}))
    assert d.downgrade_reach == ("mini-east", "mini-west", "mid")
    assert d.would_downgrade_to == "mini-east"
    assert d.as_dict()["downgrade"] == {"reach": ["mini-east", "mini-west", "mid"], "would_pick": "mini-east"}
    # live traffic never pays for the what-if
    assert decide(c, Request.of("hello")).downgrade_reach is None
