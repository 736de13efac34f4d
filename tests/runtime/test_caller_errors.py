"""A caller's bad input never counts against a model's health (issue 15: 25 malformed requests
opened the circuits of 4 of 7 healthy models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.errors import BadRequest, ServerError
from engine.errors import AllModelsFailed, RequestError, RoutingRefused
from engine.policy.model import Policy
from engine.runtime.dispatch import is_callers_error
from engine.runtime.router import Router
from tests.fakes.server import FakeVendorServer
from tests.runtime.conftest import POLICY, RowsFn, make_policy, sims

# circuits open after 5 outcomes at a 50% error rate: 25 failures would open every one
TIGHT = POLICY.replace("health: {min_requests: 1000}",
                       "health: {min_requests: 5, open_circuit: {error_rate: 0.5, cooldown_s: 600}}")
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


def tight_policy() -> Policy:
    return make_policy(base=TIGHT)


async def test_25_requests_no_model_can_honour_open_no_circuit(tmp_path: Path, rows: RowsFn) -> None:
    p = tight_policy()
    ads = sims(p, features=["streaming"])  # text-only simulated models: each refuses tools and JSON before any call
    async with Router(p, log_path=tmp_path / "log.db", adapters=ads) as router:
        for i in range(25):
            kwargs = {"tools": [TOOL]} if i % 2 else {"response_format": {"type": "json_object"}}
            with pytest.raises(AllModelsFailed):
                await router.generate(f"request {i}", **kwargs)
        assert {name: router.health.state(name) for name in p.models} == dict.fromkeys(p.models, "closed")
        assert sum(a.calls for a in ads.values()) == 0  # refused before the (simulated) vendor
        ok = await router.generate("a well-formed request")
        assert (ok.model, ok.attempts) == ("a-small", 1)
    outcomes = [r["outcome"] for r in rows("requests")]
    assert outcomes == ["bad_request"] * 25 + ["served"]  # the caller's fault, not a failure of the models
    attempts = rows("attempts")
    # every model was offered each request (a refusal is about one model, not its provider) and none retried
    assert len(attempts) == 25 * 4 + 1
    assert {a["error_class"] for a in attempts if a["outcome"] == "error"} == {"BadRequest"}


async def test_the_same_number_of_server_errors_does_open_circuits() -> None:
    """The control: the thresholds above are tight enough that real failures trip them."""
    p = tight_policy()
    ads = sims(p)
    async with Router(p, log_path=None, adapters=ads) as router:
        for a in ads.values():
            a.script(*[ServerError] * 50)
        for i in range(25):
            with pytest.raises((AllModelsFailed, RoutingRefused)):  # refused once every circuit is open
                await router.generate(f"request {i}")
        assert all(router.health.state(name) == "open" for name in p.models)


@pytest.mark.parametrize("messages, why", [
    ([{"role": "tool", "content": "42"}], "tool"),
    ([{"role": "robot", "content": "hi"}], "role"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}],
     "media type"),
    ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_9", "content": "x"}], "call_9"),
])
async def test_malformed_messages_are_refused_before_routing(tmp_path: Path, rows: RowsFn,
                                                             messages: list[dict[str, object]], why: str) -> None:
    p = tight_policy()
    ads = sims(p)
    async with Router(p, log_path=tmp_path / "log.db", adapters=ads) as router:
        for _ in range(25):
            with pytest.raises(RequestError, match=why):
                await router.generate(messages=messages)
        assert all(router.health.state(name) == "closed" for name in p.models)
    assert sum(a.calls for a in ads.values()) == 0
    logged = rows("requests")
    assert len(logged) == 25 and {r["outcome"] for r in logged} == {"bad_request"}
    assert rows("attempts") == []


async def test_vendor_400s_about_the_request_open_no_circuit(fake: FakeVendorServer, tmp_path: Path) -> None:
    p = make_policy(base=f"""
version: 1
providers:
  main: {{adapter: openai, api_key: sk-test-openai-0123456789abcdef, base_url: "{fake.openai_url}"}}
  other: {{adapter: openai, api_key: sk-test-openai-0123456789abcdef, base_url: "{fake.channel_url('other')}"}}
models:
  m1: {{provider: main, id: gpt-4o-mini, price: {{input: 1, output: 2}}, context_window: 100000}}
  m2: {{provider: other, id: gpt-4o-mini, price: {{input: 1, output: 2}}, context_window: 100000}}
routes:
  - {{name: default, strategy: ordered, candidates: [m1, m2]}}
retry: {{max_attempts: 2, backoff_ms: 1}}
health: {{min_requests: 5, open_circuit: {{error_rate: 0.5, cooldown_s: 600}}}}
""")
    fake.set_mode("openai", "bad_request")
    fake.set_mode("other", "bad_request")
    async with Router(p, log_path=None) as router:
        for i in range(25):
            with pytest.raises(AllModelsFailed) as e:
                await router.generate(f"request {i}")
            assert [cls for _, cls, _ in e.value.attempts] == ["BadRequest", "BadRequest"]  # not retried
        assert router.health.state("m1") == router.health.state("m2") == "closed"
        fake.set_mode("openai", None)
        ok = await router.generate("now it works")
        assert ok.model == "m1"
    assert fake.calls("openai") == 26 and fake.calls("other") == 25


def test_which_bad_requests_are_the_callers() -> None:
    def bad(status: int | None) -> BadRequest:
        return BadRequest("x", provider="p", model="m", status=status)

    assert is_callers_error(bad(None))  # refused before the call: an option the model cannot honour
    assert is_callers_error(bad(400)) and is_callers_error(bad(422)) and is_callers_error(bad(413))
    assert not is_callers_error(bad(404))  # an unknown model id: every request to it fails
    assert not is_callers_error(ServerError("x", provider="p", model="m", status=500))
