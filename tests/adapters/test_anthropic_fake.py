"""The fake Messages API checked against the official `anthropic` SDK, not against our adapter.

Requests are written in Anthropic's own shapes; every answer (JSON and each SSE event) is
validated against the SDK's pydantic models, and the SDK's own stream accumulator rebuilds
the message, tool inputs included.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.adapters.surface_data import PNG_B64, SCHEMA, SCHEMA_VALUE, TIME, WEATHER
from tests.fakes import FakeVendorServer
from tests.fakes.clients import TEST_KEYS, TEST_MODELS

MODEL = TEST_MODELS["anthropic"]
TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"],
          "input_schema": t["function"]["parameters"]} for t in (WEATHER, TIME)]
EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


@pytest.fixture
async def client(fake: FakeVendorServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = anthropic.AsyncAnthropic(api_key=TEST_KEYS["anthropic"], base_url=fake.anthropic_url, max_retries=0)
    yield c
    await c.close()


async def _create(client: anthropic.AsyncAnthropic, **kw: Any) -> Message:
    """messages.create, with the raw body validated strictly by the SDK's model."""
    raw = await client.messages.with_raw_response.create(model=MODEL, max_tokens=200, **kw)
    strict = Message.model_validate(json.loads(raw.http_response.text))
    parsed = await raw.parse()
    assert parsed.model_dump() == strict.model_dump()
    return strict


async def _stream(client: anthropic.AsyncAnthropic, **kw: Any) -> Message:
    """The message the SDK's own stream accumulator builds."""
    async with client.messages.stream(model=MODEL, max_tokens=200, **kw) as stream:
        async for event in stream:
            del event
        final = await stream.get_final_message()
    return final


async def test_tool_call_json(client: anthropic.AsyncAnthropic) -> None:
    msg = await _create(client, tools=TOOLS, messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "x", "unit": "celsius"}
    assert block.id.startswith("toolu_")


async def test_parallel_and_forced_tool_calls(client: anthropic.AsyncAnthropic) -> None:
    msg = await _create(client, tools=TOOLS, messages=[{"role": "user", "content": "Both, in parallel"}])
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_weather", "get_time"]
    msg = await _create(client, tools=TOOLS, tool_choice={"type": "tool", "name": "get_time"},
                        messages=[{"role": "user", "content": "Both, in parallel"}])
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_time"]
    msg = await _create(client, tools=TOOLS, tool_choice={"type": "auto", "disable_parallel_tool_use": True},
                        messages=[{"role": "user", "content": "Both, in parallel"}])
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_weather"]


async def test_tool_call_stream(client: anthropic.AsyncAnthropic, fake: FakeVendorServer) -> None:
    final = await _stream(client, tools=TOOLS, messages=[{"role": "user", "content": "Both, in parallel"}])
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "x", "unit": "celsius"}), ("get_time", {"tz": "x", "precise": True})]


async def test_raw_stream_events_validate(client: anthropic.AsyncAnthropic) -> None:
    kinds: list[str] = []
    fragments = 0
    stream = await client.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, stream=True,
                                          messages=[{"role": "user", "content": "Weather?"}])
    async for event in stream:
        strict = EVENTS.validate_python(event.model_dump())
        kinds.append(strict.type)
        if strict.type == "content_block_delta" and strict.delta.type == "input_json_delta":
            fragments += 1
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert fragments >= 2


async def test_tool_result_answer(client: anthropic.AsyncAnthropic) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris", "unit": "celsius"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "sunny"}]}]},
    ]
    msg = await _create(client, tools=TOOLS, messages=messages)
    assert msg.stop_reason == "end_turn"
    assert [b.text for b in msg.content if b.type == "text"] == ["Tool get_weather returned: sunny"]
    final = await _stream(client, tools=TOOLS, messages=messages)
    assert [b.text for b in final.content if b.type == "text"] == ["Tool get_weather returned: sunny"]


async def test_structured_output(client: anthropic.AsyncAnthropic) -> None:
    fmt: Any = {"format": {"type": "json_schema", "schema": SCHEMA}}
    msg = await _create(client, output_config=fmt, messages=[{"role": "user", "content": "A person"}])
    assert [json.loads(b.text) for b in msg.content if b.type == "text"] == [SCHEMA_VALUE]
    final = await _stream(client, output_config=fmt, messages=[{"role": "user", "content": "A person"}])
    assert [json.loads(b.text) for b in final.content if b.type == "text"] == [SCHEMA_VALUE]


async def test_images(client: anthropic.AsyncAnthropic) -> None:
    content: Any = [
        {"type": "text", "text": "Two pictures"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    msg = await _create(client, messages=[{"role": "user", "content": content}])
    assert [b.text for b in msg.content if b.type == "text"] == [f"Echo from {MODEL}: Two pictures [images: 2]"]
