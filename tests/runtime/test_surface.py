"""The request surface through the router: tool calls, tool results, JSON output, images,
streamed tool-call deltas, fallback across it, and cached tool calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.conversation import ToolCallAccumulator
from adapters.errors import ServerError
from adapters.simulated import MidStream, SimulatedAdapter
from engine.errors import AllModelsFailed
from engine.policy.model import Policy
from engine.runtime.result import RoutedDelta, StreamDone
from engine.runtime.router import Router
from tests.runtime.conftest import RowsFn, make_policy
from tests.runtime.toolsim import tool_sims

SURFACE = """
version: 1
providers:
  pa: {adapter: simulated}
  pb: {adapter: simulated}
  pc: {adapter: simulated}
models:
  a-small: {provider: pa, price: {input: 1, output: 2}, context_window: 8000, scores: {chat: 4},
            features: [streaming, tools, json, vision]}
  b-mid: {provider: pb, price: {input: 2, output: 4}, context_window: 16000, scores: {chat: 4},
          features: [streaming, tools, json, vision]}
  b-mid2: {provider: pb, price: {input: 2.5, output: 5}, context_window: 16000, scores: {chat: 4},
           features: [streaming, tools, json, vision]}
  c-big: {provider: pc, price: {input: 5, output: 10}, context_window: 200000, scores: {chat: 4},
          features: [streaming, tools, json, vision]}
routes:
  - name: default
    strategy: ordered
    candidates: [a-small, b-mid, b-mid2, c-big]
retry: {max_attempts: 2, backoff_ms: 1, max_backoff_ms: 5}
deadline_s: 10
health: {min_requests: 1000}
"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {
        "type": "string", "enum": ["c", "f"]}}, "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def surface_policy(extra: str = "") -> Policy:
    return make_policy(extra, base=SURFACE)


@pytest.fixture
def surface(tmp_path: Path) -> tuple[Policy, dict[str, SimulatedAdapter]]:
    p = surface_policy()
    return p, tool_sims(p)


async def test_a_tool_call_request_returns_the_calls(surface: tuple[Policy, dict[str, SimulatedAdapter]]) -> None:
    p, ads = surface
    async with Router(p, log_path=None, adapters=ads) as router:
        r = await router.generate("What is the weather in Paris?", tools=[WEATHER, TIME])
    assert (r.finish_reason, r.text, r.model) == ("tool_calls", "", "a-small")
    [call] = r.tool_calls
    assert (call.id, call.name, call.args()) == ("call_1", "get_weather", {"city": "x", "unit": "c"})


async def test_parallel_and_forced_tool_choice(surface: tuple[Policy, dict[str, SimulatedAdapter]]) -> None:
    p, ads = surface
    async with Router(p, log_path=None, adapters=ads) as router:
        both = await router.generate("Weather and time, in parallel please", tools=[WEATHER, TIME])
        forced = await router.generate("What time is it?", tools=[WEATHER, TIME],
                                       tool_choice={"type": "function", "function": {"name": "get_time"}})
        one = await router.generate("Weather and time, in parallel please", tools=[WEATHER, TIME],
                                    parallel_tool_calls=False)
    assert [c.name for c in both.tool_calls] == ["get_weather", "get_time"]
    assert [c.name for c in forced.tool_calls] == ["get_time"] and forced.tool_calls[0].args() == {"tz": "x"}
    assert [c.name for c in one.tool_calls] == ["get_weather"]


async def test_tool_result_round_trip(surface: tuple[Policy, dict[str, SimulatedAdapter]]) -> None:
    p, ads = surface
    async with Router(p, log_path=None, adapters=ads) as router:
        first = await router.generate("Weather in Paris?", tools=[WEATHER])
        call = first.tool_calls[0]
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "22 C and sunny"},
        ]
        second = await router.generate(messages=messages, tools=[WEATHER])
    assert (second.text, second.finish_reason, second.tool_calls) == (
        "Tool get_weather returned: 22 C and sunny", "stop", ())


async def test_json_output_and_images(surface: tuple[Policy, dict[str, SimulatedAdapter]]) -> None:
    p, ads = surface
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    async with Router(p, log_path=None, adapters=ads) as router:
        obj = await router.generate("Give me JSON", response_format={"type": "json_object"})
        # pinned: this test is about the runtime carrying the format, not about which models a
        # policy declares able to follow a schema
        typed = await router.generate("A person", model="a-small", response_format={
            "type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
        seen = await router.generate(messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert json.loads(obj.text) == {"echo": "Give me JSON"}
    assert json.loads(typed.text) == {"name": "x", "age": 1}
    assert seen.text.endswith(" [images: 1]")


async def test_streamed_tool_call_deltas_reassemble_to_the_result(
        surface: tuple[Policy, dict[str, SimulatedAdapter]]) -> None:
    p, ads = surface
    async with Router(p, log_path=None, adapters=ads) as router:
        events = [e async for e in router.stream("Weather and time, in parallel", tools=[WEATHER, TIME])]
    done = events[-1]
    assert isinstance(done, StreamDone)
    deltas = [e for e in events[:-1] if isinstance(e, RoutedDelta)]
    assert all(d.text == "" and d.tool_call is not None and d.model == "a-small" for d in deltas)
    acc = ToolCallAccumulator()
    for d in deltas:
        assert d.tool_call is not None
        acc.add(d.tool_call)
    assert acc.calls() == done.result.tool_calls
    assert [c.name for c in done.result.tool_calls] == ["get_weather", "get_time"]
    assert all(isinstance(c.args(), dict) for c in done.result.tool_calls)
    assert done.result.finish_reason == "tool_calls"
    assert len(deltas) >= 2 * 2  # a call's arguments come in more than one fragment


async def test_streamed_tool_call_falls_back_only_before_its_first_delta(
        surface: tuple[Policy, dict[str, SimulatedAdapter]]) -> None:
    p, ads = surface
    async with Router(p, log_path=None, adapters=ads) as router:
        ads["a-small"].script(ServerError, ServerError)  # fails before any delta: falls back
        events = [e async for e in router.stream("Weather?", tools=[WEATHER])]
        assert isinstance(events[-1], StreamDone) and events[-1].result.model == "b-mid"
        assert [c.name for c in events[-1].result.tool_calls] == ["get_weather"]

        ads["a-small"].script(MidStream(ServerError, after_chunks=1))  # fails after the call's first delta
        got: list[Any] = []
        with pytest.raises(AllModelsFailed):
            async for e in router.stream("Weather again?", tools=[WEATHER]):
                got.append(e)
        assert len(got) == 1 and got[0].tool_call.name == "get_weather"
        assert ads["b-mid"].calls == 1  # only the first stream: no fallback once a delta was out


async def test_tool_request_falls_back_to_the_next_tool_capable_model(tmp_path: Path, rows: RowsFn) -> None:
    p = surface_policy()
    # b-mid cannot take tools whatever the policy declares: its adapter refuses before any call,
    # which must not skip b-mid2 (same provider) nor count against b-mid's health
    ads = tool_sims(p, text_only=("b-mid",))
    async with Router(p, log_path=tmp_path / "log.db", adapters=ads) as router:
        ads["a-small"].script(ServerError, ServerError)
        r = await router.generate("Weather in Paris?", tools=[WEATHER])
        assert r.model == "b-mid2" and r.tool_calls[0].name == "get_weather"
        assert (ads["a-small"].calls, ads["b-mid"].calls) == (2, 0)  # b-mid refused before its vendor
        assert router.health.state("b-mid") == "closed"
    attempts = [(a["model"], a["outcome"], a["error_class"]) for a in rows("attempts")]
    assert attempts == [("a-small", "error", "ServerError"), ("a-small", "error", "ServerError"),
                        ("b-mid", "error", "BadRequest"), ("b-mid2", "ok", None)]
    [req] = rows("requests")
    assert (req["finish_reason"], req["tool_calls"], json.loads(req["needs"])) == ("tool_calls", 1, ["tools"])


async def test_cached_tool_call_replies_come_back_as_tool_calls(
        surface: tuple[Policy, dict[str, SimulatedAdapter]]) -> None:
    p = surface_policy('cache: {enabled: true, when: "temperature == 0"}\n')
    ads = tool_sims(p)
    async with Router(p, log_path=None, adapters=ads) as router:
        first = await router.generate("Weather in Paris?", tools=[WEATHER], temperature=0)
        again = await router.generate("Weather in Paris?", tools=[WEATHER], temperature=0)
        other_tools = await router.generate("Weather in Paris?", tools=[TIME], temperature=0)
    assert (first.cached, again.cached, other_tools.cached) == (False, True, False)
    assert again.tool_calls == first.tool_calls and again.finish_reason == "tool_calls" and again.text == ""
    assert ads["a-small"].calls == 2
