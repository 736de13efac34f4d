"""Gemini's pure mappings on SDK objects: parts of answers and stream chunks to ours."""

from __future__ import annotations

from google.genai import types

from adapters.conversation import ToolCall, ToolCallDelta, synth_call_id
from adapters.gemini import StreamMapper, reply_parts


def _call(name: str, args: dict[str, object], call_id: str | None = None) -> types.Part:
    return types.Part(function_call=types.FunctionCall(name=name, args=args, id=call_id))


def test_reply_parts_skip_thoughts_and_synthesize_stable_ids() -> None:
    parts = [types.Part(text="thinking...", thought=True), types.Part(text="Let me look."),
             _call("search", {"q": "ünï"}), _call("fetch", {"url": "u"}, "given-id")]
    text, calls = reply_parts(parts, salt="resp-1")
    assert text == "Let me look."
    assert calls == (ToolCall(synth_call_id("search", 0, "resp-1"), "search", '{"q":"ünï"}'),
                     ToolCall("given-id", "fetch", '{"url":"u"}'))
    assert reply_parts(parts, salt="resp-1") == (text, calls)  # same answer, same ids
    assert reply_parts(parts, salt="resp-2")[1][0].id != calls[0].id


def test_stream_mapper_numbers_calls_across_chunks_and_matches_reply_ids() -> None:
    mapper = StreamMapper()
    first = mapper.feed([types.Part(text="Checking "), _call("search", {"q": "a"})], "resp-1")
    second = mapper.feed([_call("fetch", {})], "resp-1")
    assert first == ["Checking ", ToolCallDelta(0, synth_call_id("search", 0, "resp-1"), "search", '{"q":"a"}')]
    assert second == [ToolCallDelta(1, synth_call_id("fetch", 1, "resp-1"), "fetch", "{}")]
    assert mapper.calls == 2
    _, whole = reply_parts([_call("search", {"q": "a"}), _call("fetch", {})], salt="resp-1")
    assert [c.id for c in whole] == [d.id for d in (*first[1:], *second) if isinstance(d, ToolCallDelta)]
