"""OpenAI's wire format as the service writes and reads it, byte for byte where it matters."""

from __future__ import annotations

import json

import pytest

from engine.server.config import ServeConfig
from engine.server.openai_wire import StreamEncoder, WireError, parse_chat_request


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
    assert chat.messages == (("system", "be brief"), ("user", "a\nb"))
    assert (chat.max_tokens, chat.stop, chat.temperature, chat.user) == (20, ("END",), 1.0, "u1")
    assert chat.metadata == {"team": "x"} and not chat.stream


@pytest.mark.parametrize("body", [
    {"model": "auto", "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
    {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
    {"model": "auto", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
    {"model": "auto", "messages": [{"role": "user", "content": "x"}], "logprobs": True},
])
def test_what_the_router_cannot_carry_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(WireError) as e:
        parse_chat_request(json.dumps(body).encode())
    assert e.value.status == 400 and e.value.code == "unsupported_parameter" and "not supported" in e.value.message


def test_config_travels_through_the_environment() -> None:
    config = ServeConfig(policy="p.yaml", keys_db="k.db", max_body_bytes=2048, reload_interval_s=0.5)
    assert ServeConfig.from_env(config.to_env()) == config
    with pytest.raises(RuntimeError, match="ENGINE_SERVE_POLICY"):
        ServeConfig.from_env({})
