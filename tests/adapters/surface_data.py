"""Requests of the tools / JSON / images surface shared by the Anthropic and Gemini adapter tests."""

from __future__ import annotations

from typing import Any

from adapters import Completion, LLMAdapter, Message, StreamEnd
from adapters.conversation import ImagePart, TextPart, ToolCall

WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}}, "required": ["city", "unit"], "additionalProperties": False,
        "$schema": "http://json-schema.org/draft-07/schema#"},
}}
TIME: dict[str, Any] = {"type": "function", "function": {
    "name": "get_time", "description": "Local time of a timezone.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}, "precise": {"type": "boolean"}}},
}}
TOOLS = [WEATHER, TIME]
WEATHER_ARGS = {"city": "x", "unit": "celsius"}
TIME_ARGS = {"tz": "x", "precise": True}

SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "score": {"type": "number"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"zip": {"type": "string"}}, "required": ["zip"],
                "additionalProperties": False}},
    "required": ["name", "age", "score", "tags", "address"], "additionalProperties": False}
SCHEMA_VALUE = {"name": "x", "age": 1, "score": 1.5, "tags": [], "address": {"zip": "x"}}
JSON_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
IMAGE_URL = "https://example.com/cat.jpg"


def image_message(*images: ImagePart, text: str = "What is in this picture?") -> Message:
    """A user message with text and images."""
    return Message("user", (TextPart(text), *images))


def inline_png() -> ImagePart:
    return ImagePart.from_url(f"data:image/png;base64,{PNG_B64}")


def url_image() -> ImagePart:
    return ImagePart.from_url(IMAGE_URL)


def tool_round_trip(call_id: str = "call_1", result: str = "sunny, 21C") -> list[Message]:
    """A conversation whose last turn answers one tool call."""
    return [
        Message("system", "Use the tools."),
        Message("user", "Weather in Paris?"),
        Message("assistant", "Let me check.", tool_calls=(ToolCall(call_id, "get_weather",
                                                                    '{"city": "Paris", "unit": "celsius"}'),)),
        Message("tool", result, tool_call_id=call_id),
    ]


def parallel_round_trip() -> list[Message]:
    """A conversation whose last two turns answer two parallel calls."""
    return [
        Message("user", "Weather and time in Paris, in parallel"),
        Message("assistant", "", tool_calls=(
            ToolCall("call_a", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
            ToolCall("call_b", "get_time", '{"tz": "Europe/Paris"}'))),
        Message("tool", "sunny", tool_call_id="call_a"),
        Message("tool", '{"time": "12:00"}', tool_call_id="call_b"),
    ]


async def collect_stream(a: LLMAdapter, *args: Any, **kw: Any) -> tuple[list[Any], Completion]:
    """A stream's events before its end, and the completion the end carries."""
    events = [e async for e in a.stream(*args, **kw)]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    return events[:-1], end.completion
