"""The OpenAI fake's tool, JSON and image answers, checked by the official `openai` SDK (not by our adapters).

Every answer below is parsed by the SDK's own models, and where the SDK has helpers for the
surface (`chat.completions.stream` reassembling tool calls, `chat.completions.parse` validating
a pydantic model) they do the checking.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pydantic
import pytest

from tests.fakes import FakeVendorServer
from tests.fakes.surface import ToolOffer, answer, args_for

TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}, "n": {"type": "number"}}}}},
]


class Address(pydantic.BaseModel):
    city: str
    zip: int


class Person(pydantic.BaseModel):
    name: str
    age: int
    score: float
    admin: bool
    tags: list[str]
    address: Address
    nickname: str | None


@pytest.fixture
async def client(fake: FakeVendorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="sk-test-0123456789", max_retries=0)
    yield c
    await c.close()


async def test_tool_calls_parse(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "weather?"}],
                                             tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("call_1", "get_weather", {"city": "x"})]


async def test_parallel_and_forced_calls(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "both, in parallel"}],
                                             tools=TOOLS)
    assert [c.function.name for c in r.choices[0].message.tool_calls or []] == [  # type: ignore[union-attr]
        "get_weather", "get_time"]
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "both, in parallel"}],
                                             tools=TOOLS, parallel_tool_calls=False)
    assert len(r.choices[0].message.tool_calls or []) == 1
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], tools=TOOLS,
                                             tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in r.choices[0].message.tool_calls or []] == ["get_time"]  # type: ignore[union-attr]
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], tools=TOOLS,
                                             tool_choice="none")
    assert r.choices[0].message.content == "Echo from m: x" and not r.choices[0].message.tool_calls


async def test_the_sdk_stream_helper_reassembles_streamed_calls(client: openai.AsyncOpenAI) -> None:
    fragments = 0
    async with client.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "in parallel"}], tools=TOOLS,
            stream_options={"include_usage": True}) as stream:
        async for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                fragments += 1
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "x"}), ("get_time", {"zone": "x", "n": 1.5})]
    assert fragments >= 4, "each call's arguments came in at least two pieces"
    assert final.choices[0].finish_reason == "tool_calls" and final.usage is not None


async def test_tool_result_answer(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model="m", tools=TOOLS, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}])
    assert r.choices[0].message.content == "Tool get_weather returned: sunny"
    assert r.choices[0].finish_reason == "stop"


async def test_parse_validates_a_pydantic_model(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "a person"}],
                                            response_format=Person)
    person = r.choices[0].message.parsed
    assert isinstance(person, Person)
    assert person.address == Address(city="x", zip=1) and person.tags == [] and person.admin is True


async def test_json_object_and_images(client: openai.AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi there"}],
                                             response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content or "") == {"echo": "hi there"}
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert r.choices[0].message.content == "Echo from m: look [images: 2]"


def test_arguments_from_schemas() -> None:
    assert args_for({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                     "required": ["b"]}) == {"b": 1}
    assert args_for({"type": "object", "properties": {
        "s": {"type": "string", "enum": ["red", "blue"]}, "n": {"type": "number"}, "t": {"type": "boolean"},
        "l": {"type": "array"}, "o": {"type": "object", "properties": {"x": {"type": ["integer", "null"]}}},
        "e": {"type": "object"}}}) == {"s": "red", "n": 1.5, "t": True, "l": [], "o": {"x": 1}, "e": {}}
    assert args_for(Person.model_json_schema())["address"] == {"city": "x", "zip": 1}
    assert answer(tools=[ToolOffer("a", {}), ToolOffer("b", {})], last_user="parallel", parallel=False) is not None
    assert answer(last_user="plain") is None
