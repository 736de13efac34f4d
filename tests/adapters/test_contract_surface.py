"""One contract for the request surface beyond text, every vendor adapter, against the wire fakes.

Tool calls (plain, streamed, parallel, forced), tool-result round trips, JSON output (object
and schema), images (inline and by URL), sampling fields forwarded, and refusal before any
call of what an adapter cannot honour. Parametrized like `test_contract.py`: every vendor kind
on its SDK, and the OpenAI kinds again over `transport: http`.

A case an adapter does not declare (`supported_options`, `supports_images`) is skipped with
that reason, so each vendor joins the suite as soon as its adapter declares the feature. The
fakes' behaviour is the one in tests/fakes/surface.py; the SDKs parse every fake answer
(test_openai_fake_surface.py checks that for OpenAI's).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import jsonschema
import pytest

from adapters import BadRequest, Completion, LLMAdapter, StreamEnd, TextDelta
from adapters.conversation import ToolCallAccumulator, ToolCallDelta
from tests.fakes import FakeVendorServer
from tests.fakes.clients import VENDOR_KINDS, adapter_for, channel_of

HTTP_TRANSPORT_KINDS = ("openai", "openai_compatible")
CASES = [(k, "sdk") for k in VENDOR_KINDS] + [(k, "http") for k in HTTP_TRANSPORT_KINDS]
pytestmark = pytest.mark.parametrize(
    ("kind", "transport"), CASES, ids=[k if t == "sdk" else f"{k}-{t}" for k, t in CASES]
)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}}, "required": ["city", "unit"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}, "24h": {"type": "boolean"}}}}}
TOOLS = [WEATHER, CLOCK]
WEATHER_ARGS = {"city": "x", "unit": "celsius"}
CLOCK_ARGS = {"zone": "x", "24h": True}

PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "score": {"type": "number"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                "additionalProperties": False}},
    "required": ["name", "age", "score", "tags", "address"], "additionalProperties": False}

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
IMAGE_URL = "https://images.example.com/cat.png"

Make = Callable[..., LLMAdapter]


@pytest.fixture
async def make(fake: FakeVendorServer, transport: str) -> AsyncIterator[Make]:
    made: list[LLMAdapter] = []

    def _make(kind: str, **kw: Any) -> LLMAdapter:
        adapter = adapter_for(kind, fake, transport=transport, **kw) if transport != "sdk" else adapter_for(
            kind, fake, **kw)
        made.append(adapter)
        return adapter

    yield _make
    for adapter in made:
        await adapter.aclose()


def needs(adapter: LLMAdapter, *options: str, images: bool = False) -> None:
    """Skip, saying why, unless the adapter declares every option (and images)."""
    missing = [o for o in options if o not in adapter.supported_options]
    if missing:
        pytest.skip(f"{adapter.kind} ({type(adapter).__name__}) does not declare {', '.join(missing)}")
    if images and not adapter.supports_images:
        pytest.skip(f"{adapter.kind} ({type(adapter).__name__}) does not declare image support")


async def collect(events: AsyncIterator[Any]) -> tuple[str, list[ToolCallDelta], Completion]:
    text: list[str] = []
    deltas: list[ToolCallDelta] = []
    end: Completion | None = None
    async for ev in events:
        assert end is None, "an event after StreamEnd"
        if isinstance(ev, TextDelta):
            text.append(ev.text)
        elif isinstance(ev, ToolCallDelta):
            deltas.append(ev)
        else:
            assert isinstance(ev, StreamEnd)
            end = ev.completion
    assert end is not None, "no StreamEnd"
    return "".join(text), deltas, end


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------- tool calls


async def test_tool_call(kind: str, make: Make) -> None:
    adapter = make(kind)
    needs(adapter, "tools")
    c = await adapter.generate(messages=_user("What is the weather in Paris?"), max_tokens=200, temperature=0.0,
                               tools=TOOLS)
    assert c.finish_reason == "tool_calls"
    assert c.text == ""
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_weather", WEATHER_ARGS)]
    assert c.tool_calls[0].id
    assert json.loads(c.tool_calls[0].arguments) == WEATHER_ARGS, "arguments are JSON text"
    assert c.output_tokens > 0


async def test_streamed_tool_call_reassembles_into_valid_json(kind: str, make: Make) -> None:
    adapter = make(kind)
    needs(adapter, "tools")
    args: dict[str, Any] = {"messages": _user("What is the weather in Paris?"), "max_tokens": 200,
                            "temperature": 0.0, "tools": TOOLS}
    whole = await adapter.generate(**args)
    text, deltas, end = await collect(adapter.stream(**args))
    assert text == ""
    assert {d.index for d in deltas} == {0}
    assert deltas[0].id and deltas[0].name == "get_weather"
    if kind != "gemini":  # Gemini streams each functionCall part whole; the others stream argument fragments
        assert len([d for d in deltas if d.arguments]) >= 2, "the arguments came in fragments"
    acc = ToolCallAccumulator()
    for d in deltas:
        acc.add(d)
    calls = acc.calls()
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", WEATHER_ARGS)]
    assert end.tool_calls == calls
    assert end.finish_reason == "tool_calls" == whole.finish_reason
    # Anthropic's tool input is an object (we serialize it) but its stream is the vendor's own JSON text
    assert [(c.name, json.loads(c.arguments)) for c in end.tool_calls] == \
        [(c.name, json.loads(c.arguments)) for c in whole.tool_calls]


async def test_tool_result_round_trip(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    needs(adapter, "tools")
    first = await adapter.generate(messages=_user("Weather in Paris?"), max_tokens=200, temperature=0.0, tools=TOOLS)
    call = first.tool_calls[0]
    history: list[dict[str, Any]] = [
        *_user("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    c = await adapter.generate(messages=history, max_tokens=200, temperature=0.0, tools=TOOLS)
    assert c.tool_calls == ()
    assert c.text == "Tool get_weather returned: sunny, 21 C"
    assert c.finish_reason == "stop"
    body = repr(fake.last_body(channel_of(kind)))
    assert "sunny, 21 C" in body and "get_weather" in body
    _, _, streamed = await collect(adapter.stream(messages=history, max_tokens=200, temperature=0.0, tools=TOOLS))
    assert streamed.text == c.text


async def test_parallel_tool_calls(kind: str, make: Make) -> None:
    adapter = make(kind)
    needs(adapter, "tools")
    prompt = _user("Check the weather and the time in parallel, please")
    c = await adapter.generate(messages=prompt, max_tokens=200, temperature=0.0, tools=TOOLS)
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_weather", WEATHER_ARGS), ("get_time", CLOCK_ARGS)]
    assert len({t.id for t in c.tool_calls}) == 2, "distinct ids"
    _, deltas, end = await collect(adapter.stream(messages=prompt, max_tokens=200, temperature=0.0, tools=TOOLS))
    assert sorted({d.index for d in deltas}) == [0, 1]
    firsts = [d for d in deltas if d.name]
    assert [(d.index, d.name) for d in firsts] == [(0, "get_weather"), (1, "get_time")]
    assert [(t.name, t.args()) for t in end.tool_calls] == [(t.name, t.args()) for t in c.tool_calls]


async def test_parallel_calls_switched_off_call_one_tool(kind: str, make: Make) -> None:
    adapter = make(kind)
    needs(adapter, "tools", "parallel_tool_calls")
    c = await adapter.generate(messages=_user("Weather and time in parallel"), max_tokens=200, temperature=0.0,
                               tools=TOOLS, parallel_tool_calls=False)
    assert [t.name for t in c.tool_calls] == ["get_weather"]


async def test_forced_tool_choice(kind: str, make: Make) -> None:
    adapter = make(kind)
    needs(adapter, "tools", "tool_choice")
    forced = {"type": "function", "function": {"name": "get_time"}}
    c = await adapter.generate(messages=_user("What is the weather in Paris?"), max_tokens=200, temperature=0.0,
                               tools=TOOLS, tool_choice=forced)
    assert [(t.name, t.args()) for t in c.tool_calls] == [("get_time", CLOCK_ARGS)]
    assert c.finish_reason == "tool_calls"
    none = await adapter.generate(messages=_user("What is the weather?"), max_tokens=200, temperature=0.0,
                                  tools=TOOLS, tool_choice="none")
    assert none.tool_calls == () and none.text and none.finish_reason == "stop"


# ---------------------------------------------------------------------------- JSON output


async def test_json_object(kind: str, make: Make) -> None:
    adapter = make(kind)
    needs(adapter, "response_format")
    c = await adapter.generate(messages=_user("Give me JSON"), max_tokens=200, temperature=0.0,
                               response_format={"type": "json_object"})
    value = json.loads(c.text)
    assert isinstance(value, dict)
    assert c.tool_calls == () and c.finish_reason == "stop"
    _, _, end = await collect(adapter.stream(messages=_user("Give me JSON"), max_tokens=200, temperature=0.0,
                                             response_format={"type": "json_object"}))
    assert json.loads(end.text) == value


async def test_json_schema(kind: str, make: Make) -> None:
    adapter = make(kind)
    needs(adapter, "response_format")
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    c = await adapter.generate(messages=_user("Describe a person"), max_tokens=300, temperature=0.0,
                               response_format=fmt)
    value = json.loads(c.text)
    jsonschema.validate(value, PERSON)
    assert c.tool_calls == () and c.finish_reason == "stop"
    _, _, end = await collect(adapter.stream(messages=_user("Describe a person"), max_tokens=300, temperature=0.0,
                                             response_format=fmt))
    assert json.loads(end.text) == value


# --------------------------------------------------------------------------------- images


async def test_image_by_base64(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    needs(adapter, images=True)
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]
    c = await adapter.generate(messages=msgs, max_tokens=200, temperature=0.0)
    assert c.text.endswith(" [images: 1]")
    assert "What is in this picture?" in c.text
    assert PNG in repr(fake.last_body(channel_of(kind))), "the image bytes went to the vendor"


async def test_image_by_url(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    needs(adapter, images=True)
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Describe"},
                                         {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "low"}},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]
    try:
        c = await adapter.generate(messages=msgs, max_tokens=200, temperature=0.0)
    except BadRequest as err:
        if fake.calls() == 0 and "url" in err.message.lower():
            pytest.skip(f"{kind} refuses image URLs before the call: {err.message}")
        raise
    assert c.text.endswith(" [images: 2]")
    assert IMAGE_URL in repr(fake.last_body(channel_of(kind)))


# ------------------------------------------------------------------------------- sampling

_GEMINI_NAMES = {"top_p": "topP", "seed": "seed", "presence_penalty": "presencePenalty",
                 "frequency_penalty": "frequencyPenalty"}


def _sent(kind: str, body: dict[str, Any], name: str) -> Any:
    """Where each vendor's body carries a sampling field."""
    if kind == "gemini":
        return (body.get("generationConfig") or {}).get(_GEMINI_NAMES[name])
    return body.get(name)


@pytest.mark.parametrize("field, value", [("seed", 1234), ("top_p", 0.25), ("presence_penalty", 0.5),
                                          ("frequency_penalty", -0.5)])
async def test_sampling_fields_are_forwarded(kind: str, make: Make, fake: FakeVendorServer, field: str,
                                             value: float) -> None:
    adapter = make(kind)
    needs(adapter, field)
    await adapter.generate("sample me", 50, 0.5, **{field: value})
    async for _ in adapter.stream("sample me", 50, 0.5, **{field: value}):
        pass
    for req in fake.requests(channel_of(kind)):
        assert _sent(kind, req.body, field) == value


async def test_an_unsupported_parameter_is_refused_before_any_call(kind: str, make: Make,
                                                                    fake: FakeVendorServer) -> None:
    adapter = make(kind)
    with pytest.raises(BadRequest) as info:
        await adapter.generate("hi", 10, 0.5, extra_body={"top_k": 5})
    assert "top_k" in info.value.message and adapter.model in info.value.message
    with pytest.raises(BadRequest, match="top_k"):
        adapter.stream("hi", 10, 0.5, extra_body={"top_k": 5})
    surface = {"seed": 1, "top_p": 0.5, "user": "u-1", "presence_penalty": 0.1, "frequency_penalty": 0.1,
               "parallel_tool_calls": True, "tools": TOOLS, "response_format": {"type": "json_object"}}
    for name, value in surface.items():
        if name not in adapter.supported_options:
            with pytest.raises(BadRequest, match=name):
                await adapter.generate("hi", 10, 0.5, **{name: value})
    if not adapter.supports_images:
        with pytest.raises(BadRequest, match="image"):
            await adapter.generate(messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": IMAGE_URL}}]}], max_tokens=10)
    assert fake.calls() == 0, "nothing reached the vendor"


async def test_a_field_the_policy_lets_through_is_sent(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind, pass_through=["top_k"])
    if kind in ("anthropic", "gemini") and not adapter.supported_options:
        pytest.skip(f"{kind} does not map the request surface yet (no supported_options)")
    await adapter.generate("hi", 10, 0.5, extra_body={"top_k": 5})
    body = fake.last_body(channel_of(kind))
    assert 5 in (body.get("top_k"), (body.get("generationConfig") or {}).get("topK"))
