"""Gemini adapter over the wire: tools, tool results, structured output, images and sampling.

The official google-genai SDK talks to the fake Gemini API; request bodies are snapshots,
answers are checked as the router sees them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from adapters import BadRequest, GeminiAdapter, InvalidInput, Message
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
async def adapter(fake: FakeVendorServer) -> AsyncIterator[GeminiAdapter]:
    a = adapter_for("gemini", fake)
    assert isinstance(a, GeminiAdapter)
    yield a
    await a.aclose()


def _decl(body: dict[str, Any], i: int = 0) -> dict[str, Any]:
    decl: dict[str, Any] = body["tools"][0]["functionDeclarations"][i]
    return decl


async def test_tool_call(adapter: GeminiAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    c = await adapter.generate("Weather in Paris?", 200, 0.5, tools=TOOLS)
    assert c.finish_reason == "tool_calls" and c.text == ""
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_weather", WEATHER_ARGS)]
    body = fake.last_body("gemini")
    assert body == snapshot
    schema = dict(WEATHER["function"]["parameters"])
    del schema["$schema"]  # not in Gemini's JSON Schema subset
    assert _decl(body)["parameters_json_schema"] == schema
    assert "toolConfig" not in body  # AUTO is Gemini's default


async def test_calls_get_synthesized_ids(adapter: GeminiAdapter) -> None:
    c = await adapter.generate("Weather and time, in parallel", 200, 0.5, tools=TOOLS)
    ids = [t.id for t in c.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


async def test_streamed_tool_call_reassembles(adapter: GeminiAdapter, fake: FakeVendorServer) -> None:
    deltas, c = await collect_stream(adapter, "Weather in Paris?", 200, 0.5, tools=TOOLS)
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert [(d.index, d.name) for d in calls] == [(0, "get_weather")]  # Gemini sends a call whole
    acc = ToolCallAccumulator()
    for d in calls:
        acc.add(d)
    (call,) = acc.calls()
    assert json.loads(call.arguments) == WEATHER_ARGS
    assert c.tool_calls == acc.calls() and c.finish_reason == "tool_calls"
    assert fake.requests("gemini")[-1].path.endswith(":streamGenerateContent")


async def test_tool_result_round_trip(
    adapter: GeminiAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    c = await adapter.generate(messages=tool_round_trip(), max_tokens=200, temperature=0.5, tools=TOOLS)
    assert c.text == "Tool get_weather returned: sunny, 21C"
    assert c.finish_reason == "stop" and c.tool_calls == ()
    body = fake.last_body("gemini")
    assert body == snapshot
    assert body["contents"][1] == {"role": "model", "parts": [
        {"text": "Let me check."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "celsius"}}}]}
    # the name comes from the matching call; a plain-text result is wrapped as an object
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 21C"}}}]}


async def test_parallel_results_share_one_user_turn(
    adapter: GeminiAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    c = await adapter.generate(messages=parallel_round_trip(), max_tokens=200, temperature=0.5, tools=TOOLS)
    body = fake.last_body("gemini")
    assert body == snapshot
    assert [m["role"] for m in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
        {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}},  # a JSON object is kept
    ]
    assert c.text == 'Tool get_time returned: {"time": "12:00"}'


async def test_parallel_tool_calls(adapter: GeminiAdapter) -> None:
    c = await adapter.generate("Weather and time, in parallel", 200, 0.5, tools=TOOLS)
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]
    deltas, s = await collect_stream(adapter, "Weather and time, in parallel", 200, 0.5, tools=TOOLS)
    assert [d.index for d in deltas if isinstance(d, ToolCallDelta)] == [0, 1]
    assert [(t.name, t.args()) for t in s.tool_calls] == [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]
    assert len({t.id for t in s.tool_calls}) == 2


# tool_choice -> (Gemini's functionCallingConfig, the tools the fake model then calls)
CHOICES: dict[str, tuple[Any, dict[str, Any], list[str]]] = {
    "named": ({"type": "function", "function": {"name": "get_time"}},
              {"mode": "ANY", "allowedFunctionNames": ["get_time"]}, ["get_time"]),
    "required": ("required", {"mode": "ANY"}, ["get_weather"]),
    "auto": ("auto", {"mode": "AUTO"}, ["get_weather"]),
    "none": ("none", {"mode": "NONE"}, []),
}


@pytest.mark.parametrize(("choice", "sent", "called"), CHOICES.values(), ids=CHOICES.keys())
async def test_tool_choice(adapter: GeminiAdapter, fake: FakeVendorServer, choice: Any,
                           sent: dict[str, Any], called: list[str]) -> None:
    c = await adapter.generate("What now?", 200, 0.5, tools=TOOLS, tool_choice=choice)
    config = fake.last_body("gemini")["toolConfig"]["functionCallingConfig"]
    assert {k.replace("allowed_function_names", "allowedFunctionNames"): v for k, v in config.items()} == sent
    assert [t.name for t in c.tool_calls] == called
    assert c.finish_reason == ("tool_calls" if called else "stop")


async def test_json_schema(adapter: GeminiAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    c = await adapter.generate("Describe a person", 200, 0.5, response_format=JSON_SCHEMA_FORMAT)
    assert json.loads(c.text) == SCHEMA_VALUE and c.finish_reason == "stop"
    body = fake.last_body("gemini")
    assert body == snapshot
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    _, s = await collect_stream(adapter, "Describe a person", 200, 0.5, response_format=JSON_SCHEMA_FORMAT)
    assert json.loads(s.text) == SCHEMA_VALUE


async def test_json_object(adapter: GeminiAdapter, fake: FakeVendorServer) -> None:
    c = await adapter.generate("Reply in JSON", 200, 0.5, response_format={"type": "json_object"})
    assert json.loads(c.text) == {"echo": "Reply in JSON"}
    config = fake.last_body("gemini")["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "responseJsonSchema" not in config


async def test_images_by_base64_and_url(
    adapter: GeminiAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    c = await adapter.generate(messages=[image_message(inline_png(), url_image())], max_tokens=200, temperature=0.5)
    assert c.text.endswith(" [images: 2]")
    body = fake.last_body("gemini")
    assert body == snapshot
    assert body["contents"][0]["parts"][1:] == [
        {"inlineData": {"mime_type": "image/png", "data": PNG_B64}},
        {"fileData": {"file_uri": IMAGE_URL, "mime_type": "image/jpeg"}},
    ]


async def test_sampling_is_forwarded(adapter: GeminiAdapter, fake: FakeVendorServer) -> None:
    await adapter.generate("hi", 50, 0.5, top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=-0.5,
                           stop=["END"])
    config = fake.last_body("gemini")["generationConfig"]
    assert (config["topP"], config["seed"], config["presencePenalty"], config["frequencyPenalty"],
            config["stopSequences"]) == (0.9, 7, 0.5, -0.5, ["END"])


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "user": ({"user": "u-1"}, "user is not supported by gemini model gemini-2.5-flash"),
    "metadata": ({"metadata": {"k": "v"}}, "metadata is not supported"),
    "extra-body": ({"extra_body": {"safetySettings": []}}, "safetySettings is not a body field the policy lets"),
}


@pytest.mark.parametrize(("kw", "message"), REFUSED.values(), ids=REFUSED.keys())
async def test_unsupported_parameters_are_refused_before_any_call(
    adapter: GeminiAdapter, fake: FakeVendorServer, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        await adapter.generate("hi", 50, 0.5, **kw)
    with pytest.raises(BadRequest, match=message):
        adapter.stream("hi", 50, 0.5, **kw)
    assert fake.calls() == 0


async def test_parallel_tool_calls_switch(adapter: GeminiAdapter, fake: FakeVendorServer) -> None:
    c = await adapter.generate("Both, in parallel", 50, 0.5, tools=TOOLS, parallel_tool_calls=True)
    assert len(c.tool_calls) == 2
    # Gemini has no switch: the turn keeps its first call, streamed or not
    c = await adapter.generate("Both, in parallel", 50, 0.5, tools=TOOLS, parallel_tool_calls=False)
    assert [t.name for t in c.tool_calls] == ["get_weather"] and c.finish_reason == "tool_calls"
    deltas, s = await collect_stream(adapter, "Both, in parallel", 50, 0.5, tools=TOOLS, parallel_tool_calls=False)
    assert [d.index for d in deltas if isinstance(d, ToolCallDelta)] == [0]
    assert [t.name for t in s.tool_calls] == ["get_weather"]


async def test_generation_settings_the_policy_lets_through_go_in_generation_config(fake: FakeVendorServer) -> None:
    a = adapter_for("gemini", fake)
    a.extra_body_fields = frozenset({"top_k", "candidateCount"})
    try:
        await a.generate("hi", 50, 0.5, extra_body={"top_k": 40, "candidateCount": 1})
    finally:
        await a.aclose()
    config = fake.last_body("gemini")["generationConfig"]
    assert (config["topK"], config["candidateCount"]) == (40, 1)


async def test_policy_pass_through_fields_reach_the_body(fake: FakeVendorServer) -> None:
    a = adapter_for("gemini", fake)
    a.extra_body_fields = frozenset({"safetySettings"})
    settings = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    try:
        await a.generate("hi", 50, 0.5, extra_body={"safetySettings": settings})
    finally:
        await a.aclose()
    assert fake.last_body("gemini")["safetySettings"] == settings


async def test_assistant_text_turns_and_images_keep_order(adapter: GeminiAdapter, fake: FakeVendorServer) -> None:
    msgs = [Message("user", "Hi"), Message("assistant", "Hello"), image_message(url_image(), text="And this?")]
    await adapter.generate(messages=msgs, max_tokens=50, temperature=0.5)
    assert [c["role"] for c in fake.last_body("gemini")["contents"]] == ["user", "model", "user"]


async def test_history_call_arguments_must_be_a_json_object(adapter: GeminiAdapter, fake: FakeVendorServer) -> None:
    msgs = tool_round_trip()
    msgs[2] = Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", "[1, 2]"),))
    with pytest.raises(InvalidInput, match="tool call 'call_1' \\(get_weather\\): arguments are not a JSON object"):
        await adapter.generate(messages=msgs, max_tokens=50, temperature=0.5, tools=TOOLS)
    with pytest.raises(InvalidInput, match="arguments are not a JSON object"):
        adapter.stream(messages=msgs, max_tokens=50, temperature=0.5, tools=TOOLS)
    assert fake.calls() == 0


async def test_standalone_in_the_seeds_shape(fake: FakeVendorServer) -> None:
    a = GeminiAdapter(api_key=TEST_KEYS["gemini"], model="gemini-2.5-flash", base_url=fake.gemini_url)
    try:
        c = await a.generate("Weather?", 100, 0.5, tools=TOOLS)
    finally:
        await a.aclose()
    assert (c.provider, c.model, [t.name for t in c.tool_calls]) == ("gemini", "gemini-2.5-flash", ["get_weather"])
    with pytest.raises(InvalidInput, match="model id"):
        GeminiAdapter(api_key="k")


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_thought_signatures_go_back_with_their_calls(
    adapter: GeminiAdapter, fake: FakeVendorServer, streamed: bool
) -> None:
    prompt = "Weather and time, in parallel"
    if streamed:
        _, first = await collect_stream(adapter, prompt, 200, 0.5, tools=TOOLS)
    else:
        first = await adapter.generate(prompt, 200, 0.5, tools=TOOLS)
    a, b = first.tool_calls
    history = [Message("user", prompt), Message("assistant", "", tool_calls=first.tool_calls),
               Message("tool", "sunny", tool_call_id=a.id), Message("tool", "noon", tool_call_id=b.id)]
    await adapter.generate(messages=history, max_tokens=200, temperature=0.5, tools=TOOLS)
    parts = fake.last_body("gemini")["contents"][1]["parts"]
    # the fake signs a turn's first call, as Gemini's thinking models do: the signature goes back as it came
    assert base64.b64decode(parts[0]["thoughtSignature"]).startswith(b"sig-fake")
    assert "thoughtSignature" not in parts[1]
    # a call Gemini did not make (another vendor's, or the caller's own) has none to send
    await adapter.generate(messages=tool_round_trip(), max_tokens=200, temperature=0.5, tools=TOOLS)
    assert "thoughtSignature" not in fake.last_body("gemini")["contents"][1]["parts"][1]
