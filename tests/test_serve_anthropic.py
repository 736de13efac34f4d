"""The Anthropic Messages front door: its wire format, and the official anthropic SDK against `engine serve`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import httpx2
import pytest
from syrupy.assertion import SnapshotAssertion

from adapters.conversation import ImagePart, Message, OutputFormat, TextPart, Tool, ToolCall, ToolCallDelta, ToolChoice
from engine.runtime.result import RoutedCompletion
from engine.server.anthropic_wire import (
    MessageStreamEncoder,
    message_body,
    parse_count_tokens_request,
    parse_messages_request,
)
from engine.server.config import ServeConfig
from engine.server.keystore import KeyStore
from engine.server.openai_wire import WireError
from tests.fakes import FakeVendorServer, Fault
from tests.test_serve_support import ServerThread, fake_policy

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def _parse(body: dict[str, object]) -> object:
    return parse_messages_request(json.dumps({"model": "auto", "max_tokens": 100, **body}).encode())


# -- the wire format ----------------------------------------------------------------------------


def test_a_messages_body_becomes_the_conversation_model() -> None:
    chat = parse_messages_request(json.dumps({
        "model": "auto", "max_tokens": 300, "temperature": 0.2, "top_p": 0.9, "top_k": 5,
        "stop_sequences": ["END"], "metadata": {"user_id": "u-7"}, "stream": True,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "weather", "description": "Weather of a city", "input_schema": WEATHER}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Where is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "rain"}]},
                {"type": "text", "text": "And tomorrow?"}]},
        ],
    }).encode())
    assert (chat.model, chat.max_tokens, chat.temperature, chat.stop, chat.stream, chat.user) == (
        "auto", 300, 0.2, ("END",), True, "u-7")
    assert chat.messages == (
        Message("system", "Be brief."),
        Message("user", (TextPart("Where is this?"), ImagePart(data=PNG, media_type="image/png"),
                         ImagePart(url="https://x.test/a.jpg"))),
        Message("assistant", "Let me look.", (ToolCall("toolu_1", "weather", '{"city":"Oslo"}'),)),
        Message("tool", "rain", tool_call_id="toolu_1", name="weather"),
        Message("user", (TextPart("And tomorrow?"),)),
    )
    o = chat.options
    assert o.tools == (Tool("weather", "Weather of a city", WEATHER),)
    assert (o.tool_choice, o.parallel_tool_calls, o.top_p, o.extra_body) == (
        ToolChoice("required"), False, 0.9, {"top_k": 5})


def test_tool_choice_output_format_and_error_results() -> None:
    tools = [{"name": "weather", "input_schema": WEATHER}]
    chat = _parse({"tools": tools, "tool_choice": {"type": "tool", "name": "weather"},
                   "output_config": {"format": {"type": "json_schema", "schema": WEATHER}},
                   "messages": [{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather",
                                                                   "input": {}}]},
                                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                              "content": "no such city", "is_error": True}]}]})
    assert chat.options.tool_choice == ToolChoice.tool("weather")  # type: ignore[attr-defined]
    assert chat.options.output == OutputFormat("json_schema", "output", WEATHER)  # type: ignore[attr-defined]
    assert chat.messages[-1] == Message("tool", "Error: no such city", tool_call_id="t1",  # type: ignore[attr-defined]
                                        name="weather")


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"max_tokens": None}, "max_tokens", "invalid_request_error"),
    ({"model": None}, "model", "invalid_request_error"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking", "unsupported_parameter"),
    ({"colour": 1}, "colour", "invalid_request_error"),
    ({"metadata": {"team": "x"}}, "metadata.team", "invalid_request_error"),
    ({"temperature": 1.5}, "temperature", "invalid_request_error"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type", "unsupported_parameter"),
    ({"tools": [{"name": "bad name", "input_schema": WEATHER}]}, "tools[0].function.name", "invalid_value"),
    ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages.0.content.0.type",
     "unsupported_parameter"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role", "invalid_request_error"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages.0.content.0.type", "invalid_request_error"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9", "content": "x"}]}]},
     "messages[0]", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64",
                                                                             "media_type": "image/bmp",
                                                                             "data": PNG}}]}]},
     "messages.0.content.0.source.media_type", "invalid_request_error"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "file:///x"}}]}]},
     "messages.0.content.0.source.url", "invalid_request_error"),
])
def test_what_the_door_refuses_is_named(body: dict[str, object], param: str, code: str) -> None:
    full: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], **body}
    full = {k: v for k, v in full.items() if v is not None}
    raw = json.dumps({**({"model": "auto", "max_tokens": 10}), **full})
    if body.get("max_tokens", 0) is None:
        raw = json.dumps({"model": "auto", **full})
    if body.get("model", "") is None:
        raw = json.dumps({"max_tokens": 10, **full})
    with pytest.raises(WireError) as e:
        parse_messages_request(raw.encode())
    assert (e.value.status, e.value.param, e.value.code) == (400, param, code)


def test_count_tokens_takes_no_max_tokens() -> None:
    chat = parse_count_tokens_request(b'{"model": "auto", "messages": [{"role": "user", "content": "hello"}]}')
    assert chat.messages == (Message("user", "hello"),)
    with pytest.raises(WireError):
        parse_count_tokens_request(b'{"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}')  # noqa: E501


def _result(**kw: object) -> RoutedCompletion:
    base: dict[str, object] = dict(text="Checking.", model="gpt-mini", model_id="gpt-4o-mini", provider="openai",
                                   finish_reason="tool_calls", input_tokens=12, output_tokens=7, cost_usd=0.0,
                                   latency_ms=1.0, attempts=1, fallbacks=0, cached=False, route="default",
                                   query_type="chat", request_id="abc",
                                   tool_calls=(ToolCall("call_1", "weather", '{"city":"x"}'),))
    base.update(kw)
    return RoutedCompletion(**base)  # type: ignore[arg-type]


def test_an_answer_with_a_tool_call_is_a_tool_use_block(snapshot: SnapshotAssertion) -> None:
    raw = message_body(_result())
    assert json.loads(raw) == snapshot
    msg = anthropic.types.Message.model_validate_json(raw)  # the SDK's own model
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    tool = msg.content[1]
    assert isinstance(tool, anthropic.types.ToolUseBlock) and tool.input == {"city": "x"}
    plain = json.loads(message_body(_result(text="hi", tool_calls=(), finish_reason="length")))
    assert plain["content"] == [{"type": "text", "text": "hi"}] and plain["stop_reason"] == "max_tokens"


def _sdk_over(raw: bytes) -> anthropic.Anthropic:
    """The anthropic SDK reading `raw` as the SSE answer of any request (httpx's mock transport)."""
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    return anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9",
                               http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))


def test_stream_events_follow_anthropics_sequence(snapshot: SnapshotAssertion) -> None:
    enc = MessageStreamEncoder("msg_1", "gpt-mini", input_tokens=9)
    raw = (enc.first("Let ") + enc.delta("me check.") + enc.tool_call(ToolCallDelta(0, "call_1", "weather")) +
           enc.tool_call(ToolCallDelta(0, arguments='{"ci')) + enc.tool_call(ToolCallDelta(0, arguments='ty": "x"}')) +
           enc.tool_call(ToolCallDelta(1, None, "time", "{}")) + enc.end("tool_calls", 9, 11))
    names = [block.split("\n")[0].removeprefix("event: ") for block in raw.decode().split("\n\n") if block]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    assert raw.decode() == snapshot
    with _sdk_over(raw).messages.stream(model="auto", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Let me check."
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 11 and final.usage.input_tokens == 9
    tools = [b for b in final.content if isinstance(b, anthropic.types.ToolUseBlock)]
    assert [(b.id, b.name, b.input) for b in tools][0] == ("call_1", "weather", {"city": "x"})
    assert tools[1].name == "time" and tools[1].input == {} and tools[1].id.startswith("call_")


def test_a_mid_stream_error_is_an_error_event() -> None:
    enc = MessageStreamEncoder("msg_2", "gpt-mini", input_tokens=1)
    raw = enc.first("partial") + enc.error(WireError(503, "every model failed", type="server_error"))
    with pytest.raises(anthropic.APIStatusError) as e:
        with _sdk_over(raw).messages.stream(model="auto", max_tokens=10,
                                            messages=[{"role": "user", "content": "x"}]) as s:
            "".join(s.text_stream)
    assert "every model failed" in str(e.value)


# -- through the service ------------------------------------------------------------------------

MSG: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Say hello to the router"}]


@pytest.fixture
def server(fake: FakeVendorServer, tmp_path: Path) -> Iterator[ServerThread]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0, max_body_bytes=4096)) as s:
        yield s


def client(server: ServerThread, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def test_the_sdk_gets_a_routed_message(server: ServerThread, fake: FakeVendorServer) -> None:
    raw = client(server).messages.with_raw_response.create(model="auto", max_tokens=50, messages=MSG,
                                                           system="Be nice.")
    msg = raw.parse()
    assert msg.model == "gpt-mini" and msg.stop_reason == "end_turn"  # an OpenAI model served an Anthropic call
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Echo from gpt-4o-mini: Say hello to the router"  # type: ignore[union-attr]
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["x-router-model"] == "gpt-mini" and raw.headers["x-router-route"] == "default"
    assert msg.id == "msg_" + raw.headers["x-request-id"] and raw.headers["request-id"] == raw.headers["x-request-id"]
    sent = fake.last_body("openai")
    assert sent["messages"][0] == {"role": "system", "content": "Be nice."}


def test_the_sdk_streams_text(server: ServerThread) -> None:
    with client(server).messages.stream(model="claude", max_tokens=50, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Echo from claude-haiku-4-5: Say hello to the router"
    assert final.model == "claude" and final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_count_tokens(server: ServerThread) -> None:
    n = client(server).messages.count_tokens(model="auto", messages=MSG)
    assert n.input_tokens > 0


def test_errors_have_anthropics_shape(server: ServerThread, fake: FakeVendorServer) -> None:
    c = client(server)
    with pytest.raises(anthropic.NotFoundError) as nf:
        c.messages.create(model="claude-99", max_tokens=5, messages=MSG)
    assert nf.value.body["type"] == "error"  # type: ignore[index]
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        c.messages.create(model="auto", max_tokens=5, messages=[{"role": "user", "content": []}])
    assert "messages.0.content" in bad.value.message and fake.calls() == 0
    fake.set_mode("openai", "server_error")
    fake.set_mode("anthropic", "overloaded")
    with pytest.raises(anthropic.InternalServerError) as down:
        c.messages.create(model="auto", max_tokens=5, messages=MSG)
    assert down.value.status_code == 503 and down.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    r = httpx.get(server.url + "/v1/messages")
    assert r.status_code == 405 and r.json()["type"] == "error" and r.headers["allow"] == "POST"


def test_same_keys_as_the_openai_door(fake: FakeVendorServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    store = KeyStore(tmp_path / "keys.db")
    _, secret = store.create("acme")
    _, only_claude = store.create("acme", allow=["claude"])
    try:
        with ServerThread(ServeConfig(policy=str(policy), keys_db=store.path, reload_interval_s=0)) as s:
            with pytest.raises(anthropic.AuthenticationError) as e:
                client(s, "sk-wrong").messages.create(model="auto", max_tokens=5, messages=MSG)
            assert e.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
            assert client(s, secret).messages.create(model="auto", max_tokens=5, messages=MSG).content  # x-api-key
            bearer = anthropic.Anthropic(base_url=s.url, auth_token=secret, max_retries=0)
            assert bearer.messages.create(model="auto", max_tokens=5, messages=MSG).content  # Authorization: Bearer
            with pytest.raises(anthropic.PermissionDeniedError) as denied:  # the key's model allow-list holds here too
                client(s, only_claude).messages.create(model="gpt-mini", max_tokens=5, messages=MSG)
            assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
            assert client(s, only_claude).messages.create(model="claude", max_tokens=5, messages=MSG).model == "claude"
    finally:
        store.close()


def test_fallback_before_the_first_event_and_an_error_event_after(server: ServerThread,
                                                                   fake: FakeVendorServer) -> None:
    fake.script("openai", "server_error")
    with client(server).messages.stream(model="auto", max_tokens=50, messages=MSG) as s:
        text = "".join(s.text_stream)
    assert text == "Echo from claude-haiku-4-5: Say hello to the router"  # the route's next model served
    assert s.get_final_message().model == "claude"
    fake.script("openai", Fault("stream_error", after_chunks=2))
    with pytest.raises(anthropic.APIStatusError):
        with client(server).messages.stream(model="auto", max_tokens=50, messages=MSG) as s:
            "".join(s.text_stream)
