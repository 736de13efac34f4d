"""The simulated adapter: deterministic text, latency and failures; scripting; streaming."""

from __future__ import annotations

from collections import Counter

import pytest

from adapters import (
    Completion,
    ContextTooLong,
    InvalidInput,
    Message,
    MidStream,
    Overloaded,
    Price,
    ProviderError,
    RateLimited,
    ServerError,
    SimulatedAdapter,
    StreamEnd,
    TextDelta,
    Timeout,
)
from adapters.base import Request


class FakeSleep:
    """Records requested sleeps instead of sleeping (an injected clock)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def sim(**kw: object) -> SimulatedAdapter:
    kw.setdefault("sleep", FakeSleep())
    return SimulatedAdapter("sim", "sim-model", **kw)  # type: ignore[arg-type]


async def test_same_seed_and_prompt_same_text() -> None:
    a, b = sim(seed=7), sim(seed=7)
    ra, rb = await a.generate("the same prompt", 200, 0.5), await b.generate("the same prompt", 200, 0.5)
    assert ra.text == rb.text and ra.text.startswith("[sim-model] re: the same prompt | ")
    assert (ra.input_tokens, ra.output_tokens) == (rb.input_tokens, rb.output_tokens)
    assert (await a.generate("the same prompt", 200, 0.5)).text == ra.text, "a retry gets the same text"
    assert (await sim(seed=8).generate("the same prompt", 200, 0.5)).text != ra.text
    assert (await a.generate("another prompt", 200, 0.5)).text != ra.text


async def test_latency_is_lognormal_between_the_quantiles_and_scaled() -> None:
    sleep = FakeSleep()
    a = sim(latency_ms=(100.0, 400.0), seed=1, time_scale=0.5, sleep=sleep)
    for i in range(400):
        await a.generate(f"prompt {i}", 50, 0.5)
    drawn = sorted(s / 0.5 * 1000 for s in sleep.calls)  # back to unscaled milliseconds
    assert len(drawn) == 400
    assert 80 <= drawn[200] <= 125, "median near p50"
    assert 280 <= drawn[380] <= 560, "95th percentile near p95"
    # reproducible
    again = FakeSleep()
    b = sim(latency_ms=(100.0, 400.0), seed=1, time_scale=0.5, sleep=again)
    for i in range(400):
        await b.generate(f"prompt {i}", 50, 0.5)
    assert again.calls == sleep.calls


async def test_failure_rate_picks_among_transient_and_rate_limit_errors() -> None:
    a = sim(failure_rate=0.5, seed=3)
    outcomes: Counter[str] = Counter()
    for i in range(400):
        try:
            await a.generate(f"p{i}", 20, 0.5)
            outcomes["ok"] += 1
        except ProviderError as e:
            assert e.provider == "sim" and e.model == "sim-model"
            outcomes[type(e).__name__] += 1
    assert a.calls == 400
    assert 150 <= outcomes["ok"] <= 250
    assert set(outcomes) == {"ok", "RateLimited", "ServerError", "Overloaded", "Timeout"}


async def test_faults_option_restricts_the_failures() -> None:
    a = sim(failure_rate=1.0, faults=["rate_limited"])
    for i in range(20):
        with pytest.raises(RateLimited) as info:
            await a.generate(f"p{i}", 20, 0.5)
        assert info.value.retry_after == 1.0 and info.value.status == 429


async def test_retry_of_a_failed_prompt_draws_again_and_reruns_repeat() -> None:
    async def sequence(seed: int) -> list[str]:
        a = sim(failure_rate=0.5, seed=seed)
        out: list[str] = []
        for _ in range(12):
            try:
                await a.generate("same prompt every time", 20, 0.5)
                out.append("ok")
            except ProviderError as e:
                out.append(type(e).__name__)
        return out

    first = await sequence(11)
    assert len(set(first)) > 1, "not stuck on one outcome"
    assert await sequence(11) == first


async def test_script_is_consumed_first_in_order() -> None:
    a = sim()

    def shout(req: Request) -> str:
        return req.messages[-1].content.upper()

    boom = ServerError("scripted", provider="sim", model="sim-model", status=500)
    a.script(RateLimited, "fixed text", boom, shout)
    with pytest.raises(RateLimited) as info:
        await a.generate("x", 10, 0.5)
    assert info.value.provider == "sim"
    assert (await a.generate("x", 10, 0.5)).text == "fixed text"
    with pytest.raises(ServerError) as info2:
        await a.generate("x", 10, 0.5)
    assert info2.value is boom
    assert (await a.generate("quiet", 10, 0.5)).text == "QUIET"
    assert (await a.generate("x", 10, 0.5)).text.startswith("[sim-model]"), "back to normal"
    assert a.calls == 5


async def test_invalid_input_does_not_count_as_a_call() -> None:
    a = sim()
    with pytest.raises(InvalidInput):
        await a.generate("   ", 10, 0.5)
    with pytest.raises(InvalidInput):
        a.stream("hi", 0, 0.5)
    assert a.calls == 0


async def collect(a: SimulatedAdapter, prompt: str, **kw: object) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    end = None
    async for ev in a.stream(prompt, 200, 0.5, **kw):  # type: ignore[arg-type]
        if isinstance(ev, TextDelta):
            deltas.append(ev.text)
        else:
            assert isinstance(ev, StreamEnd)
            end = ev.completion
    assert end is not None
    return deltas, end


async def test_stream_chunks_join_to_the_generate_text() -> None:
    a = sim(price=Price(1.0, 4.0))
    whole = await a.generate("stream a few words", 200, 0.5)
    deltas, end = await collect(a, "stream a few words")
    assert len(deltas) > 3 and "".join(deltas) == end.text == whole.text
    assert end.cost_usd == pytest.approx(whole.cost_usd) and end.cost_usd > 0


async def test_mid_stream_failure_after_some_chunks() -> None:
    a = sim()
    a.script(MidStream(Overloaded, after_chunks=2))
    seen: list[str] = []
    with pytest.raises(Overloaded):
        async for ev in a.stream("several words to stream here", 200, 0.5):
            if isinstance(ev, TextDelta):
                seen.append(ev.text)
    assert len(seen) == 2
    a.script(MidStream(Overloaded, after_chunks=2))
    with pytest.raises(Overloaded):
        await a.generate("in generate the failure is immediate", 200, 0.5)


async def test_latency_past_the_timeout_is_timeout() -> None:
    sleep = FakeSleep()
    a = sim(latency_ms=(5000.0, 5000.0), timeout_s=1.0, sleep=sleep)
    with pytest.raises(Timeout):
        await a.generate("slow", 10, 0.5)
    assert sleep.calls == [1.0], "waited the timeout, not the latency"
    with pytest.raises(Timeout):
        await a.generate("slow", 10, 0.5, timeout_s=0.25)


async def test_context_window_option() -> None:
    a = sim(context_window=1000)
    with pytest.raises(ContextTooLong):
        await a.generate("word " * 4000, 10, 0.5)
    assert (await a.generate("short", 10, 0.5)).text
    assert (await sim().generate("word " * 100_000, 10, 0.5)).text, "not enforced unless configured"


async def test_max_tokens_and_stop_shape_the_text() -> None:
    a = sim()
    c = await a.generate("a prompt with quite a few words in it to echo back", 5, 0.5)
    assert c.finish_reason == "length" and len(c.text) <= 20
    assert (await a.generate(messages=[Message("system", "s"), Message("user", "u")], max_tokens=50,
                             temperature=0.1)).text.startswith("[sim-model] re: u")


async def test_real_sleep_with_time_scale_zero_is_fast() -> None:
    a = SimulatedAdapter("sim", "m", latency_ms=(10_000.0, 20_000.0), time_scale=0.0)
    c = await a.generate("instant", 10, 0.5)
    assert c.latency_ms < 10_000


@pytest.mark.parametrize(
    "kw",
    [{"latency_ms": (10.0, 5.0)}, {"latency_ms": (-1.0, 5.0)}, {"failure_rate": 1.5}, {"time_scale": -1.0},
     {"faults": ["nope"]}, {"faults": []}, {"context_window": 0}, {"timeout_s": 0}],
)
def test_bad_settings_are_rejected(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        SimulatedAdapter("sim", "m", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the request surface

_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}, "h24": {"type": "boolean"}}}}},
]


async def test_calls_the_first_tool_with_arguments_from_its_schema() -> None:
    a = sim()
    c = await a.generate("weather in Paris?", 100, 0.5, tools=_TOOLS)
    assert (c.text, c.finish_reason) == ("", "tool_calls")
    assert [(t.name, t.arguments) for t in c.tool_calls] == [("get_weather", '{"city":"x"}')]
    again = await sim().generate("weather in Paris?", 100, 0.5, tools=_TOOLS)
    assert again.tool_calls == c.tool_calls, "same conversation, same call ids"
    both = await a.generate("weather and time in parallel", 100, 0.5, tools=_TOOLS)
    assert [t.name for t in both.tool_calls] == ["get_weather", "get_time"]
    assert both.tool_calls[1].args() == {"zone": "x", "h24": True}
    one = await a.generate("weather and time in parallel", 100, 0.5, tools=_TOOLS, parallel_tool_calls=False)
    assert [t.name for t in one.tool_calls] == ["get_weather"]
    forced = await a.generate("weather?", 100, 0.5, tools=_TOOLS,
                              tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [t.name for t in forced.tool_calls] == ["get_time"]
    none = await a.generate("weather?", 100, 0.5, tools=_TOOLS, tool_choice="none")
    assert none.tool_calls == () and none.text.startswith("[sim-model] re: weather?")


async def test_answers_a_tool_result_with_it() -> None:
    a = sim()
    first = await a.generate("weather?", 100, 0.5, tools=_TOOLS)
    call = first.tool_calls[0]
    c = await a.generate(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}], max_tokens=100, tools=_TOOLS)
    assert (c.text, c.finish_reason, c.tool_calls) == ("Tool get_weather returned: sunny", "stop", ())


async def test_streams_tool_calls_in_fragments() -> None:
    from adapters.conversation import ToolCallAccumulator, ToolCallDelta

    events = [ev async for ev in sim().stream("both in parallel", 100, 0.5, tools=_TOOLS)]
    deltas = [ev for ev in events if isinstance(ev, ToolCallDelta)]
    assert [d.index for d in deltas if d.name] == [0, 1]
    assert len([d for d in deltas if d.index == 0 and d.arguments]) == 2
    acc = ToolCallAccumulator()
    for d in deltas:
        acc.add(d)
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.completion.tool_calls == acc.calls()
    assert [c.args() for c in acc.calls()] == [{"city": "x"}, {"zone": "x", "h24": True}]
    assert end.completion.finish_reason == "tool_calls" and end.completion.output_tokens > 0


async def test_json_output_is_valid_for_the_schema() -> None:
    import json

    import jsonschema

    schema = {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "kind": {"enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "home": {"$ref": "#/$defs/Home"}, "nick": {"anyOf": [{"type": "null"}, {"type": "string"}]}},
        "required": ["name", "age", "kind", "tags", "home", "nick"],
        "$defs": {"Home": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}}}
    a = sim()
    c = await a.generate("a person", 200, 0.5,
                         response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    value = json.loads(c.text)
    jsonschema.validate(value, schema)
    assert value == {"name": "x", "age": 1, "kind": "a", "tags": [], "home": {"lat": 1.5}, "nick": "x"}
    obj = await a.generate("hello json", 200, 0.5, response_format={"type": "json_object"})
    assert json.loads(obj.text) == {"echo": "hello json"}


async def test_honours_stop_and_counts_images() -> None:
    a = sim()
    full = await a.generate("alpha beta gamma", 200, 0.5)
    cut = await a.generate("alpha beta gamma", 200, 0.5, stop=[" | "])
    assert cut.text == "[sim-model] re: alpha beta gamma" and full.text.startswith(cut.text + " | ")
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    seen = await a.generate(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "image_url", "image_url": {"url": "https://images.example.com/x.png"}}]}], max_tokens=200)
    assert seen.text.endswith(" [images: 2]")


async def test_a_model_without_a_feature_refuses_before_the_call() -> None:
    from adapters import BadRequest

    text_only = sim(features=["streaming"])
    with pytest.raises(BadRequest, match="tools is not supported by simulated model sim-model"):
        await text_only.generate("weather?", 100, 0.5, tools=_TOOLS)
    with pytest.raises(BadRequest, match="response_format is not supported"):
        await text_only.generate("json", 100, 0.5, response_format={"type": "json_object"})
    with pytest.raises(BadRequest, match="image input is not supported"):
        await text_only.generate(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://images.example.com/x.png"}}]}], max_tokens=10)
    assert text_only.calls == 0
    await text_only.generate("plain text works", 100, 0.5, seed=3, top_p=0.5)
    no_stream = sim(features=["tools", "json", "vision"])
    with pytest.raises(BadRequest, match="streaming is not supported by simulated model sim-model"):
        no_stream.stream("hi", 10, 0.5)
    with pytest.raises(InvalidInput, match="unknown feature"):
        sim(features=["teleport"])
