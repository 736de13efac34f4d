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
