"""The request surface end to end: the router over the shipped adapters, against the simulated
vendor and the wire fakes of OpenAI, Anthropic and Gemini (official SDKs, real HTTP on loopback).

Each case runs where the adapter declares what it needs (`supported_options`,
`supports_images`) and is skipped, saying so, where it does not yet: the adapters are built
in parallel with the runtime, and the cases start running as their support lands. The
expected answers are the fakes' shared behaviour spec (see `tests/fakes`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.conversation import ToolCallAccumulator
from engine.policy.api import load_policy_text
from engine.runtime.result import RoutedDelta, StreamDone
from engine.runtime.router import Router
from tests.fakes.clients import TEST_KEYS, TEST_MODELS
from tests.fakes.server import FakeVendorServer
from tests.runtime.test_surface import PIXEL, TIME, WEATHER

KINDS = ("simulated", "openai", "openai-sdk", "anthropic", "gemini")
FEATURES = "[streaming, tools, json, vision]"


def _provider(kind: str, fake: FakeVendorServer, channel: str) -> str:
    if kind == "simulated":
        return "{adapter: simulated}"  # no latency configured: instant
    vendor = "openai" if kind == "openai-sdk" else kind
    url = fake.channel_url(channel, vendor)
    transport = ", options: {transport: sdk}" if kind == "openai-sdk" else ""
    return f'{{adapter: {vendor}, api_key: {TEST_KEYS[vendor]}, base_url: "{url}"{transport}}}'


def _policy_text(kind: str, fake: FakeVendorServer) -> str:
    vendor = "openai" if kind == "openai-sdk" else kind
    model_id = TEST_MODELS.get(vendor, "sim-1")
    return f"""
version: 1
providers:
  first: {_provider(kind, fake, "first")}
  second: {_provider(kind, fake, "second")}
models:
  m1: {{provider: first, id: {model_id}, price: {{input: 1, output: 2}}, context_window: 100000,
        features: {FEATURES}}}
  m2: {{provider: second, id: {model_id}, price: {{input: 1, output: 2}}, context_window: 100000,
        features: {FEATURES}}}
routes:
  - {{name: default, strategy: ordered, candidates: [m1, m2]}}
retry: {{max_attempts: 1}}
health: {{min_requests: 1000}}
"""


@pytest.fixture(params=KINDS)
async def routed(request: pytest.FixtureRequest, fake: FakeVendorServer) -> AsyncIterator[tuple[str, Router]]:
    kind: str = request.param
    router = Router(load_policy_text(_policy_text(kind, fake), "e2e.yaml", env={}), log_path=None)
    yield kind, router
    await router.aclose()


def _need(router: Router, *options: str, images: bool = False) -> None:
    adapter = router.adapters.get(router.policy.models["m1"])
    missing = [o for o in options if o not in adapter.supported_options]
    if missing or (images and not adapter.supports_images):
        what = ", ".join(missing + (["images"] if images and not adapter.supports_images else []))
        pytest.skip(f"the {adapter.kind} adapter of this branch does not declare {what} yet")


async def test_tool_call(routed: tuple[str, Router]) -> None:
    kind, router = routed
    _need(router, "tools")
    r = await router.generate("What is the weather in Paris?", tools=[WEATHER, TIME])
    assert r.finish_reason == "tool_calls" and r.model == "m1"
    [call] = r.tool_calls
    assert (call.name, call.args()) == ("get_weather", {"city": "x", "unit": "c"})
    assert call.id


async def test_streamed_tool_call(routed: tuple[str, Router]) -> None:
    kind, router = routed
    _need(router, "tools")
    events = [e async for e in router.stream("What is the weather in Paris?", tools=[WEATHER])]
    done = events[-1]
    assert isinstance(done, StreamDone)
    acc = ToolCallAccumulator()
    for e in events[:-1]:
        assert isinstance(e, RoutedDelta)
        if e.tool_call is not None:
            acc.add(e.tool_call)
    assert acc.calls() == done.result.tool_calls
    assert [(c.name, c.args()) for c in done.result.tool_calls] == [("get_weather", {"city": "x", "unit": "c"})]


async def test_tool_result_round_trip(routed: tuple[str, Router]) -> None:
    kind, router = routed
    _need(router, "tools")
    first = await router.generate("Weather in Paris?", tools=[WEATHER])
    call = first.tool_calls[0]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "22 C"},
    ]
    second = await router.generate(messages=messages, tools=[WEATHER])
    assert second.text == "Tool get_weather returned: 22 C" and not second.tool_calls


async def test_json_schema_output(routed: tuple[str, Router]) -> None:
    kind, router = routed
    _need(router, "response_format")
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["name", "n"], "additionalProperties": False}
    r = await router.generate("A record", model="m1", response_format={
        "type": "json_schema", "json_schema": {"name": "rec", "schema": schema, "strict": True}})
    assert json.loads(r.text) == {"name": "x", "n": 1}


async def test_image(routed: tuple[str, Router]) -> None:
    kind, router = routed
    _need(router, images=True)
    r = await router.generate(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert r.text.endswith(" [images: 1]")


async def test_tool_call_falls_back_to_the_next_tool_capable_model(routed: tuple[str, Router],
                                                                   fake: FakeVendorServer) -> None:
    kind, router = routed
    _need(router, "tools")
    if kind == "simulated":
        from adapters.simulated import SimulatedAdapter

        first = router.adapters.get(router.policy.models["m1"])
        assert isinstance(first, SimulatedAdapter)
        first.script(__import__("adapters.errors", fromlist=["ServerError"]).ServerError)
    else:
        fake.script("first", "server_error")
    r = await router.generate("Weather in Paris?", tools=[WEATHER])
    assert (r.model, r.fallbacks, r.tool_calls[0].name) == ("m2", 1, "get_weather")
