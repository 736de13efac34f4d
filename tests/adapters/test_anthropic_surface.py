"""Anthropic adapter over the wire: tools, tool results, structured output, images and sampling.

The official SDK talks to the fake Messages API; request bodies are snapshots, answers are
checked as the router sees them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from adapters import AnthropicAdapter, BadRequest, InvalidInput, Message, TextDelta
from adapters.conversation import ToolCall, ToolCallAccumulator, ToolCallDelta
from tests.adapters.surface_data import (
    IMAGE_URL,
    JSON_SCHEMA_FORMAT,
    PNG_B64,
    SCHEMA_VALUE,
    TIME_ARGS,
    TOOLS,
    WEATHER,
    WEATHER_ARGS,
    collect_stream,
    image_message,
    inline_png,
    parallel_round_trip,
    tool_round_trip,
    url_image,
)
from tests.fakes import FakeVendorServer
from tests.fakes.clients import TEST_KEYS, adapter_for


@pytest.fixture
async def adapter(fake: FakeVendorServer) -> AsyncIterator[AnthropicAdapter]:
    a = adapter_for("anthropic", fake)
    assert isinstance(a, AnthropicAdapter)
    yield a
    await a.aclose()


async def test_tool_call(adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    c = await adapter.generate("Weather in Paris?", 200, 0.5, tools=TOOLS)
    assert c.finish_reason == "tool_calls" and c.text == ""
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_weather", WEATHER_ARGS)]
    assert c.tool_calls[0].id.startswith("toolu_")
    body = fake.last_body("anthropic")
    assert body == snapshot
    assert body["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    assert "tool_choice" not in body  # auto is Anthropic's default


async def test_streamed_tool_call_reassembles(adapter: AnthropicAdapter, fake: FakeVendorServer) -> None:
    deltas, c = await collect_stream(adapter, "Weather in Paris?", 200, 0.5, tools=TOOLS)
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert len(calls) >= 3  # the start, then the input JSON in at least two fragments
    assert calls[0].index == 0 and calls[0].name == "get_weather" and calls[0].id
    assert all(d.index == 0 and d.id is None for d in calls[1:])
    acc = ToolCallAccumulator()
    for d in calls:
        acc.add(d)
    (call,) = acc.calls()
    assert json.loads(call.arguments) == WEATHER_ARGS
    assert c.tool_calls == acc.calls() and c.finish_reason == "tool_calls"
    assert fake.last_body("anthropic")["stream"] is True


async def test_tool_result_round_trip(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    c = await adapter.generate(messages=tool_round_trip(), max_tokens=200, temperature=0.5, tools=TOOLS)
    assert c.text == "Tool get_weather returned: sunny, 21C"
    assert c.finish_reason == "stop" and c.tool_calls == ()
    body = fake.last_body("anthropic")
    assert body == snapshot
    assert body["messages"][1]["content"][1] == {"type": "tool_use", "id": "call_1", "name": "get_weather",
                                                 "input": {"city": "Paris", "unit": "celsius"}}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny, 21C"}]}


async def test_parallel_results_share_one_user_turn(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    msgs = [*parallel_round_trip(), Message("user", "Thanks. Summarize.")]
    c = await adapter.generate(messages=msgs, max_tokens=200, temperature=0.5, tools=TOOLS)
    body = fake.last_body("anthropic")
    assert body == snapshot
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in body["messages"][2]["content"]] == ["tool_result", "tool_result", "text"]
    # the turn ends with the user's new text, not a result: the model calls a tool again
    assert [t.name for t in c.tool_calls] == ["get_weather"]


async def test_parallel_tool_calls(adapter: AnthropicAdapter) -> None:
    c = await adapter.generate("Weather and time, in parallel", 200, 0.5, tools=TOOLS)
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]
    assert len({t.id for t in c.tool_calls}) == 2
    deltas, s = await collect_stream(adapter, "Weather and time, in parallel", 200, 0.5, tools=TOOLS)
    assert [d.index for d in deltas if isinstance(d, ToolCallDelta) and d.name] == [0, 1]
    assert [(t.name, t.args()) for t in s.tool_calls] == [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]


async def test_parallel_tool_calls_false_disables_parallel_use(
    adapter: AnthropicAdapter, fake: FakeVendorServer
) -> None:
    c = await adapter.generate("Weather and time, in parallel", 200, 0.5, tools=TOOLS, parallel_tool_calls=False)
    assert [t.name for t in c.tool_calls] == ["get_weather"]
    assert fake.last_body("anthropic")["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


# tool_choice -> (what Anthropic gets, the tools the fake model then calls)
CHOICES: dict[str, tuple[Any, dict[str, Any], list[str]]] = {
    "named": ({"type": "function", "function": {"name": "get_time"}}, {"type": "tool", "name": "get_time"},
              ["get_time"]),
    "required": ("required", {"type": "any"}, ["get_weather"]),
    "auto": ("auto", {"type": "auto"}, ["get_weather"]),
    "none": ("none", {"type": "none"}, []),
}


@pytest.mark.parametrize(("choice", "sent", "called"), CHOICES.values(), ids=CHOICES.keys())
async def test_tool_choice(adapter: AnthropicAdapter, fake: FakeVendorServer, choice: Any,
                           sent: dict[str, Any], called: list[str]) -> None:
    c = await adapter.generate("What now?", 200, 0.5, tools=TOOLS, tool_choice=choice)
    assert fake.last_body("anthropic")["tool_choice"] == sent
    assert [t.name for t in c.tool_calls] == called
    assert c.finish_reason == ("tool_calls" if called else "stop")


async def test_json_schema_by_structured_outputs(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    c = await adapter.generate("Describe a person", 200, 0.5, response_format=JSON_SCHEMA_FORMAT)
    assert json.loads(c.text) == SCHEMA_VALUE and c.finish_reason == "stop"
    body = fake.last_body("anthropic")
    assert body == snapshot
    assert body["output_config"]["format"]["type"] == "json_schema"
    _, s = await collect_stream(adapter, "Describe a person", 200, 0.5, response_format=JSON_SCHEMA_FORMAT)
    assert json.loads(s.text) == SCHEMA_VALUE


async def test_json_object_by_a_forced_tool(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    fmt = {"type": "json_object"}
    c = await adapter.generate("Reply in JSON", 200, 0.5, response_format=fmt)
    assert json.loads(c.text) == {"echo": "Reply in JSON"}
    assert c.finish_reason == "stop" and c.tool_calls == ()
    body = fake.last_body("anthropic")
    assert body == snapshot
    assert body["tool_choice"] == {"type": "tool", "name": "json_output"}
    deltas, s = await collect_stream(adapter, "Reply in JSON", 200, 0.5, response_format=fmt)
    assert all(isinstance(d, TextDelta) for d in deltas) and len(deltas) >= 2
    assert json.loads(s.text) == {"echo": "Reply in JSON"} and s.finish_reason == "stop" and s.tool_calls == ()


async def test_images_by_base64_and_url(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    c = await adapter.generate(messages=[image_message(inline_png(), url_image())], max_tokens=200, temperature=0.5)
    assert c.text.endswith(" [images: 2]")
    body = fake.last_body("anthropic")
    assert body == snapshot
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
    ]


async def test_openai_shaped_image_parts(adapter: AnthropicAdapter, fake: FakeVendorServer) -> None:
    msg = {"role": "user", "content": [{"type": "text", "text": "Look"},
                                       {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}]}
    c = await adapter.generate(messages=[msg], max_tokens=100, temperature=0.5)
    assert c.text.endswith(" [images: 1]")
    assert fake.last_body("anthropic")["messages"][0]["content"][1]["source"]["type"] == "base64"


async def test_top_p_stop_and_user_are_forwarded(adapter: AnthropicAdapter, fake: FakeVendorServer) -> None:
    await adapter.generate("hi", 50, 0.5, top_p=0.9, user="user-42", stop=["END"])
    body = fake.last_body("anthropic")
    assert body["top_p"] == 0.9
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["stop_sequences"] == ["END"]


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "seed": ({"seed": 7}, "seed is not supported by anthropic model claude-haiku-4-5"),
    "presence_penalty": ({"presence_penalty": 0.5}, "presence_penalty is not supported"),
    "frequency_penalty": ({"frequency_penalty": 0.5}, "frequency_penalty is not supported"),
    "metadata": ({"metadata": {"k": "v"}}, "metadata is not supported"),
    "extra-body": ({"extra_body": {"top_k": 5}}, "top_k is not a body field the policy lets through"),
    "json-object-with-tools": ({"response_format": {"type": "json_object"}, "tools": TOOLS},
                               "json_object cannot be combined with tools"),
}


@pytest.mark.parametrize(("kw", "message"), REFUSED.values(), ids=REFUSED.keys())
async def test_unsupported_parameters_are_refused_before_any_call(
    adapter: AnthropicAdapter, fake: FakeVendorServer, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        await adapter.generate("hi", 50, 0.5, **kw)
    with pytest.raises(BadRequest, match=message):
        adapter.stream("hi", 50, 0.5, **kw)
    assert fake.calls() == 0


async def test_policy_pass_through_fields_reach_the_body(fake: FakeVendorServer) -> None:
    a = adapter_for("anthropic", fake)
    a.extra_body_fields = frozenset({"top_k"})
    try:
        await a.generate("hi", 50, 0.5, extra_body={"top_k": 5})
    finally:
        await a.aclose()
    assert fake.last_body("anthropic")["top_k"] == 5


async def test_history_call_arguments_must_be_a_json_object(adapter: AnthropicAdapter, fake: FakeVendorServer) -> None:
    msgs = tool_round_trip()
    msgs[2] = Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Par'),))
    with pytest.raises(InvalidInput, match="tool call 'call_1' \\(get_weather\\): arguments are not a JSON object"):
        await adapter.generate(messages=msgs, max_tokens=50, temperature=0.5, tools=TOOLS)
    with pytest.raises(InvalidInput, match="arguments are not a JSON object"):
        adapter.stream(messages=msgs, max_tokens=50, temperature=0.5, tools=TOOLS)
    assert fake.calls() == 0


async def test_an_empty_tool_result_has_no_content(adapter: AnthropicAdapter, fake: FakeVendorServer) -> None:
    msgs = tool_round_trip(result="")
    c = await adapter.generate(messages=msgs, max_tokens=50, temperature=0.5, tools=TOOLS)
    assert fake.last_body("anthropic")["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1"}]
    assert c.text == "Tool get_weather returned: "


async def test_standalone_in_the_seeds_shape(fake: FakeVendorServer) -> None:
    a = AnthropicAdapter(api_key=TEST_KEYS["anthropic"], model="claude-haiku-4-5", base_url=fake.anthropic_url)
    try:
        c = await a.generate("Weather?", 100, 0.5, tools=TOOLS)
    finally:
        await a.aclose()
    assert (c.provider, c.model, [t.name for t in c.tool_calls]) == ("anthropic", "claude-haiku-4-5", ["get_weather"])
    with pytest.raises(InvalidInput, match="model id"):
        AnthropicAdapter(api_key="k")
