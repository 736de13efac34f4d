"""Anthropic's pure mappings on SDK objects: stream events and answers to ours."""

from __future__ import annotations

from typing import Any

from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from adapters.anthropic import JSON_TOOL, StreamMapper, reply_parts
from adapters.conversation import ToolCall, ToolCallAccumulator, ToolCallDelta

EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def _events(*raw: dict[str, Any]) -> list[RawMessageStreamEvent]:
    return [EVENTS.validate_python(e) for e in raw]


def _start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


_MESSAGE_START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [], "stop_reason": None,
    "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 5}}}


def test_text_blocks_take_no_tool_index() -> None:
    mapper = StreamMapper()
    events = _events(
        _MESSAGE_START,
        _start(0, {"type": "text", "text": ""}),
        _delta(0, {"type": "text_delta", "text": "Checking."}),
        {"type": "content_block_stop", "index": 0},
        _start(1, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
        _delta(1, {"type": "input_json_delta", "partial_json": '{"city": '}),
        _start(2, {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}),
        _delta(2, {"type": "input_json_delta", "partial_json": '{"tz": "UTC"}'}),
        _delta(1, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        _delta(1, {"type": "input_json_delta", "partial_json": ""}),
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    )
    out = [item for e in events for item in mapper.feed(e)]
    assert out == [
        "Checking.",
        ToolCallDelta(0, "toolu_a", "get_weather"),
        ToolCallDelta(0, arguments='{"city": '),
        ToolCallDelta(1, "toolu_b", "get_time"),
        ToolCallDelta(1, arguments='{"tz": "UTC"}'),
        ToolCallDelta(0, arguments='"Paris"}'),
    ]
    acc = ToolCallAccumulator()
    for d in out:
        if isinstance(d, ToolCallDelta):
            acc.add(d)
    assert acc.calls() == (ToolCall("toolu_a", "get_weather", '{"city": "Paris"}'),
                           ToolCall("toolu_b", "get_time", '{"tz": "UTC"}'))
    assert (mapper.stop_reason, mapper.input_tokens, mapper.output_tokens, mapper.finished) == (
        "tool_use", 15, 30, True)


def test_the_json_answer_tool_streams_as_text() -> None:
    mapper = StreamMapper(json_tool=JSON_TOOL)
    events = _events(
        _MESSAGE_START,
        _start(0, {"type": "tool_use", "id": "toolu_j", "name": JSON_TOOL, "input": {}}),
        _delta(0, {"type": "input_json_delta", "partial_json": '{"a"'}),
        _delta(0, {"type": "input_json_delta", "partial_json": ": 1}"}),
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 3}},
    )
    assert [item for e in events for item in mapper.feed(e)] == ['{"a"', ": 1}"]
    assert mapper.stop_reason == "end_turn"


def _message(content: list[dict[str, Any]], stop_reason: str) -> AnthropicMessage:
    return AnthropicMessage.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": content,
        "stop_reason": stop_reason, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}})


def test_reply_parts() -> None:
    msg = _message([{"type": "text", "text": "Let me look. "},
                    {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "ünï", "n": 2}}],
                   "tool_use")
    assert reply_parts(msg) == ("Let me look. ", "tool_use", (ToolCall("toolu_1", "search", '{"q":"ünï","n":2}'),))
    forced = _message([{"type": "tool_use", "id": "toolu_2", "name": JSON_TOOL, "input": {"echo": "hi"}}],
                      "tool_use")
    assert reply_parts(forced, json_tool=JSON_TOOL) == ('{"echo":"hi"}', "end_turn", ())
