"""The fake Gemini API checked against the official google-genai SDK, not against our adapter.

Requests are written in google-genai's own types; every answer (JSON and each SSE chunk) is
validated by the SDK into its pydantic `GenerateContentResponse` (`model_validate`), and its
accessors (`function_calls`, `text`, `parsed`) read it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google import genai
from google.genai import types

from tests.adapters.surface_data import PNG_B64, SCHEMA, SCHEMA_VALUE, TIME, WEATHER
from tests.fakes import FakeVendorServer
from tests.fakes.clients import TEST_KEYS, TEST_MODELS

MODEL = TEST_MODELS["gemini"]
DECLS = [types.FunctionDeclaration(name=t["function"]["name"], description=t["function"]["description"],
                                   parameters_json_schema=t["function"]["parameters"]) for t in (WEATHER, TIME)]
TOOLS = [types.Tool(function_declarations=DECLS)]


@pytest.fixture
async def client(fake: FakeVendorServer) -> AsyncIterator[genai.Client]:
    c = genai.Client(api_key=TEST_KEYS["gemini"], http_options=types.HttpOptions(
        base_url=fake.gemini_url, retry_options=types.HttpRetryOptions(attempts=1)))
    yield c
    await c.aio.aclose()


async def _generate(client: genai.Client, contents: Any, **config: Any) -> types.GenerateContentResponse:
    resp = await client.aio.models.generate_content(model=MODEL, contents=contents,
                                                    config=types.GenerateContentConfig(**config))
    return resp


async def _stream(client: genai.Client, contents: Any, **config: Any) -> list[types.GenerateContentResponse]:
    stream = await client.aio.models.generate_content_stream(model=MODEL, contents=contents,
                                                             config=types.GenerateContentConfig(**config))
    return [chunk async for chunk in stream]


async def test_function_call(client: genai.Client) -> None:
    resp = await _generate(client, "Weather in Paris?", tools=TOOLS)
    assert resp.candidates and resp.candidates[0].finish_reason == types.FinishReason.STOP
    calls = resp.function_calls or []
    assert [(c.name, c.args, c.id) for c in calls] == [("get_weather", {"city": "x", "unit": "celsius"}, None)]


async def test_parallel_forced_and_none(client: genai.Client) -> None:
    resp = await _generate(client, "Both, in parallel", tools=TOOLS)
    assert [c.name for c in resp.function_calls or []] == ["get_weather", "get_time"]
    forced = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
        mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_time"]))
    resp = await _generate(client, "Both, in parallel", tools=TOOLS, tool_config=forced)
    assert [(c.name, c.args) for c in resp.function_calls or []] == [("get_time", {"tz": "x", "precise": True})]
    none = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
        mode=types.FunctionCallingConfigMode.NONE))
    resp = await _generate(client, "Both, in parallel", tools=TOOLS, tool_config=none)
    assert resp.function_calls is None and resp.text == f"Echo from {MODEL}: Both, in parallel"


async def test_function_call_stream(client: genai.Client) -> None:
    chunks = await _stream(client, "Both, in parallel", tools=TOOLS)
    calls = [c.name for chunk in chunks for c in chunk.function_calls or []]
    assert calls == ["get_weather", "get_time"]
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata.candidates_token_count


async def test_function_response_answer(client: genai.Client) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part.from_text(text="Weather in Paris?")]),
        types.Content(role="model", parts=[types.Part.from_function_call(
            name="get_weather", args={"city": "Paris", "unit": "celsius"})]),
        types.Content(role="user", parts=[types.Part.from_function_response(
            name="get_weather", response={"result": "sunny"})]),
    ]
    resp = await _generate(client, contents, tools=TOOLS)
    assert resp.text == "Tool get_weather returned: sunny"
    chunks = await _stream(client, contents, tools=TOOLS)
    assert "".join(c.text or "" for c in chunks) == "Tool get_weather returned: sunny"


async def test_json_output(client: genai.Client) -> None:
    resp = await _generate(client, "A person", response_mime_type="application/json", response_json_schema=SCHEMA)
    assert resp.parsed == SCHEMA_VALUE
    resp = await _generate(client, "Any JSON", response_mime_type="application/json")
    assert json.loads(resp.text or "") == {"echo": "Any JSON"}
    chunks = await _stream(client, "A person", response_mime_type="application/json", response_json_schema=SCHEMA)
    assert json.loads("".join(c.text or "" for c in chunks)) == SCHEMA_VALUE


async def test_images(client: genai.Client) -> None:
    parts = [types.Part.from_text(text="Two pictures"),
             types.Part.from_bytes(data=base64.b64decode(PNG_B64), mime_type="image/png"),
             types.Part.from_uri(file_uri="https://example.com/cat.jpg", mime_type="image/jpeg")]
    resp = await _generate(client, [types.Content(role="user", parts=parts)])
    assert resp.text == f"Echo from {MODEL}: Two pictures [images: 2]"
