"""OpenAI's wire format as the service writes and reads it, byte for byte where it matters."""

from __future__ import annotations

import base64
import json

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from syrupy.assertion import SnapshotAssertion

from adapters.conversation import (
    NO_OPTIONS,
    ImagePart,
    Message,
    Options,
    OutputFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    needed_features,
)
from engine.runtime.result import RoutedCompletion
from engine.server.config import ServeConfig
from engine.server.openai_wire import StreamEncoder, WireError, completion_body, model_body, parse_chat_request


def _events(raw: bytes) -> list[dict[str, object] | str]:
    out: list[dict[str, object] | str] = []
    for block in raw.decode().split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_stream_chunks_have_openais_shape_and_key_order() -> None:
    enc = StreamEncoder("chatcmpl-1", 1700000000, "gpt-mini", include_usage=True)
    first = _events(enc.first("Hel"))
    assert first == [
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-mini",
         "service_tier": "default", "system_fingerprint": None,
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None,
                      "finish_reason": None}], "usage": None},
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-mini",
         "service_tier": "default", "system_fingerprint": None,
         "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None}],
         "usage": None},
    ]
    assert list(first[0]) == ["id", "object", "created", "model", "service_tier", "system_fingerprint", "choices",
                              "usage"]
    assert _events(enc.delta('lo "\n\u00e9'))[0]["choices"] == [  # type: ignore[index]
        {"index": 0, "delta": {"content": 'lo "\n\u00e9'}, "logprobs": None, "finish_reason": None}]
    end = _events(enc.end("length", 3, 2))
    assert end[0]["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    assert end[1]["choices"] == [] and end[1]["usage"]["total_tokens"] == 5  # type: ignore[index]
    assert end[2] == "[DONE]"


def test_stream_without_usage_has_no_usage_key() -> None:
    enc = StreamEncoder("chatcmpl-2", 1, "m", include_usage=False)
    events = _events(enc.first("") + enc.end("other", 1, 1))
    assert [e for e in events if isinstance(e, dict) and "usage" in e] == []
    assert events[-2]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]


def test_messages_are_normalised() -> None:
    body = {"model": "auto", "max_tokens": 10, "max_completion_tokens": 20, "stop": "END",
            "messages": [{"role": "developer", "content": "be brief"},
                         {"role": "user", "name": "ann", "content": [{"type": "text", "text": "a"},
                                                                      {"type": "text", "text": "b"}]}],
            "user": "u1", "metadata": {"team": "x"}, "top_p": 0.5, "seed": 3}
    chat = parse_chat_request(json.dumps(body).encode())
    assert chat.messages == (Message("system", "be brief"),
                             Message("user", (TextPart("a"), TextPart("b")), name="ann"))
    assert (chat.max_tokens, chat.stop, chat.temperature, chat.user) == (20, ("END",), 1.0, "u1")
    assert chat.metadata == {"team": "x"} and not chat.stream
    assert chat.options == Options(top_p=0.5, seed=3)


def test_plain_text_needs_no_options() -> None:
    chat = parse_chat_request(b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}')
    assert chat.options is NO_OPTIONS


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_the_whole_surface_reaches_the_conversation_model() -> None:
    body = {
        "model": "auto", "seed": 7, "top_p": 0.9, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "parallel_tool_calls": False,
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather of a city",
                                                    "parameters": WEATHER, "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "Answer", "schema": WEATHER}},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is this city?"},
                                         {"type": "image_url",
                                          "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        ],
    }
    chat = parse_chat_request(json.dumps(body).encode())
    user, assistant, tool = chat.messages
    assert user.images == (ImagePart(data=PNG, media_type="image/png", detail="low"),
                           ImagePart(url="https://x.test/a.jpg"))
    assert assistant.tool_calls == (ToolCall("call_1", "weather", '{"city": "Oslo"}'),)
    assert (tool.role, tool.tool_call_id, tool.text) == ("tool", "call_1", "rain")
    assert chat.options == Options(
        tools=(Tool("weather", "Weather of a city", WEATHER, True),), tool_choice=ToolChoice.tool("weather"),
        parallel_tool_calls=False, output=OutputFormat("json_schema", "Answer", WEATHER), top_p=0.9, seed=7,
        presence_penalty=0.5, frequency_penalty=-0.5)
    assert needed_features(chat.messages, chat.options) == {"tools", "vision", "json", "json_schema"}


def _msgs(*extra: dict[str, object]) -> list[dict[str, object]]:
    return [{"role": "user", "content": "hi"}, *extra]


TOOL = {"type": "function", "function": {"name": "weather", "parameters": WEATHER}}


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"n": 2}, "n", "unsupported_parameter"),
    ({"logprobs": True}, "logprobs", "unsupported_parameter"),
    ({"store": True}, "store", "unsupported_parameter"),
    ({"reasoning_effort": "high"}, "reasoning_effort", "unsupported_parameter"),
    ({"audio": {"voice": "x"}}, "audio", "unsupported_parameter"),
    ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_parameter"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type", "unsupported_parameter"),
    ({"tools": [TOOL, TOOL]}, "tools", "invalid_value"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "invalid_value"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}},
     "response_format.json_schema.name", "invalid_value"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid_value"),
    ({"seed": 1.5}, "seed", "invalid_type"),
    ({"top_p": 1.5}, "top_p", "decimal_above_max_value"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", "invalid_type"),
    ({"colour": "red"}, "colour", "unknown_parameter"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),  # without stream
])
def test_what_the_router_cannot_carry_is_refused_by_name(extra: dict[str, object], param: str, code: str) -> None:
    with pytest.raises(WireError) as e:
        parse_chat_request(json.dumps({"model": "auto", "messages": _msgs(), **extra}).encode())
    assert (e.value.status, e.value.param, e.value.code) == (400, param, code)
    assert e.value.message


@pytest.mark.parametrize(("messages", "param", "code"), [
    ([{"role": "tool", "tool_call_id": "call_9", "content": "x"}], "messages[0]", "invalid_value"),
    (_msgs({"role": "tool", "tool_call_id": "call_9", "content": "x"}), "messages[1]", "invalid_value"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
     "messages[0].content[0]", "invalid_value"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
     "messages[0].content[0]", "invalid_value"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "messages[0].content[0].type",
     "unsupported_parameter"),
    ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role", "unsupported_parameter"),
    ([{"role": "user", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}],
     "messages[0].tool_calls", "invalid_value"),
    ([{"role": "assistant", "content": None}], "messages[0].content", "missing_required_parameter"),
    ([{"role": "user", "content": "x", "colour": 1}], "messages[0].colour", "unknown_parameter"),
])
def test_bad_messages_are_named(messages: list[dict[str, object]], param: str, code: str) -> None:
    with pytest.raises(WireError) as e:
        parse_chat_request(json.dumps({"model": "auto", "messages": messages}).encode())
    assert (e.value.status, e.value.param, e.value.code) == (400, param, code)


def _result(**kw: object) -> RoutedCompletion:
    base: dict[str, object] = dict(text="", model="gpt-mini", model_id="gpt-4o-mini", provider="openai",
                                   finish_reason="tool_calls", input_tokens=12, output_tokens=7, cost_usd=0.0,
                                   latency_ms=1.0, attempts=1, fallbacks=0, cached=False, route="default",
                                   query_type="chat", request_id="abc",
                                   tool_calls=(ToolCall("call_1", "weather", '{"city":"x"}'),
                                               ToolCall("call_2", "time", "{}")))
    base.update(kw)
    return RoutedCompletion(**base)  # type: ignore[arg-type]


def test_a_tool_call_answer_is_openais_shape(snapshot: SnapshotAssertion) -> None:
    raw = completion_body(_result(), 1700000000)
    assert json.loads(raw) == snapshot
    parsed = ChatCompletion.model_validate_json(raw)  # the SDK's own model of the answer
    msg = parsed.choices[0].message
    assert msg.content is None and parsed.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or []] == [
        ("call_1", "weather", '{"city":"x"}'), ("call_2", "time", "{}")]
    text = json.loads(completion_body(_result(text="hi", tool_calls=(), finish_reason="stop"), 1))
    assert text["choices"][0]["message"]["content"] == "hi" and "tool_calls" not in text["choices"][0]["message"]


def _whole_object(result: RoutedCompletion, created: int) -> bytes:
    """The chat.completion object built as a dict and encoded at once: what completion_body must equal."""
    message: dict[str, object] = {"role": "assistant", "content": result.text if result.text or not result.tool_calls
                                  else None, "refusal": None, "annotations": []}
    if result.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}} for c in result.tool_calls]
    usage = {"prompt_tokens": result.input_tokens, "completion_tokens": result.output_tokens,
             "total_tokens": result.input_tokens + result.output_tokens,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                           "rejected_prediction_tokens": 0}}
    finish = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}
    return json.dumps({"id": f"chatcmpl-{result.request_id}", "object": "chat.completion", "created": created,
                       "model": result.model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                                           "finish_reason": finish.get(result.finish_reason, "stop")}],
                       "usage": usage, "service_tier": "default", "system_fingerprint": None},
                      ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("kw", [
    {}, {"text": "hi", "tool_calls": (), "finish_reason": "stop"},
    {"text": 'quote " backslash \\ newline \n tab \t \u00e9\u4e2d\U0001f600 \u2028', "tool_calls": ()},
    {"text": "", "tool_calls": (), "finish_reason": "length", "input_tokens": 0, "output_tokens": 0},
    {"text": "some words", "finish_reason": "other", "model": "m\u00fcnchen \"x\"", "request_id": "r\u00e9"},
    {"text": "both text and calls", "input_tokens": 10**12, "output_tokens": 1},
])
def test_the_completion_body_is_the_whole_object_encoded(kw: dict[str, object]) -> None:
    result = _result(**kw)
    assert completion_body(result, 1700000000) == _whole_object(result, 1700000000)


def test_streamed_tool_calls_are_reassembled_by_the_sdk(snapshot: SnapshotAssertion) -> None:
    enc = StreamEncoder("chatcmpl-3", 1700000000, "gpt-mini", include_usage=True)
    raw = (enc.first("") + enc.tool_call(ToolCallDelta(0, "call_1", "weather")) +
           enc.tool_call(ToolCallDelta(0, arguments='{"ci')) + enc.tool_call(ToolCallDelta(0, arguments='ty":"x"}')) +
           enc.tool_call(ToolCallDelta(1, None, "time", "{}")) + enc.end("tool_calls", 5, 4))
    events = _events(raw)
    assert events == snapshot
    first_call = events[1]["choices"][0]["delta"]["tool_calls"][0]  # type: ignore[index]
    assert first_call == {"index": 0, "id": "call_1", "type": "function",
                          "function": {"name": "weather", "arguments": ""}}
    assert events[2]["choices"][0]["delta"]["tool_calls"] == [  # type: ignore[index]
        {"index": 0, "function": {"arguments": '{"ci'}}]
    state = ChatCompletionStreamState()
    for e in events:
        if isinstance(e, dict):
            state.handle_chunk(ChatCompletionChunk.model_validate(e))
    final = state.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("weather", {"city": "x"}), ("time", {})]
    assert calls[0].id == "call_1" and calls[1].id.startswith("call_")  # a stable id where the vendor gave none
    assert final.choices[0].finish_reason == "tool_calls"


def test_model_by_id() -> None:
    models, routes = {"gpt-mini": "openai"}, ("default",)
    assert json.loads(model_body("gpt-mini", models, routes, 5)) == {"id": "gpt-mini", "object": "model",
                                                                     "created": 5, "owned_by": "openai"}
    assert json.loads(model_body("default", models, routes, 5))["owned_by"] == "router"
    with pytest.raises(WireError) as e:
        model_body("gpt-9", models, routes, 5)
    assert (e.value.status, e.value.code) == (404, "model_not_found")


def test_config_travels_through_the_environment() -> None:
    config = ServeConfig(policy="p.yaml", keys_db="k.db", max_body_bytes=2048, reload_interval_s=0.5)
    assert ServeConfig.from_env(config.to_env()) == config
    with pytest.raises(RuntimeError, match="ENGINE_SERVE_POLICY"):
        ServeConfig.from_env({})
