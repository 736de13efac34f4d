"""Tools, structured output and images through `engine serve`, with the official SDKs as clients
and each vendor's wire fake behind the service.

Each vendor case runs where its adapter declares the feature (`supported_options`,
`supports_images`); a build whose adapter lacks it skips the case and says why.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pydantic
import pytest
from openai import OpenAI

from adapters.anthropic import AnthropicAdapter
from adapters.base import LLMAdapter
from adapters.gemini import GeminiAdapter
from adapters.openai import OpenAIAdapter
from engine.policy.api import compile_policy, load_policy_text
from engine.routing.decide import decide
from engine.routing.features import Request
from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer
from tests.fakes.clients import TEST_KEYS
from tests.test_serve_support import ServerThread

ALL = "[streaming, tools, json, vision]"
ADAPTERS: dict[str, type[LLMAdapter]] = {"gpt-mini": OpenAIAdapter, "claude": AnthropicAdapter,
                                         "gemini": GeminiAdapter}
VENDOR_OF = {"gpt-mini": "openai", "claude": "anthropic", "gemini": "gemini"}


def tools_policy(fake: FakeVendorServer) -> str:
    """Three vendors with every feature, and a cheaper text-only model first in the default route."""
    return f"""version: 1
providers:
  openai: {{adapter: openai, api_key: {TEST_KEYS['openai']}, base_url: '{fake.openai_url}', timeout_s: 10}}
  cheap: {{adapter: openai, api_key: {TEST_KEYS['openai']}, base_url: '{fake.channel_url("cheap")}', timeout_s: 10}}
  anthropic: {{adapter: anthropic, api_key: {TEST_KEYS['anthropic']}, base_url: '{fake.anthropic_url}', timeout_s: 10}}
  gemini: {{adapter: gemini, api_key: {TEST_KEYS['gemini']}, base_url: '{fake.gemini_url}', timeout_s: 10}}
models:
  textonly: {{provider: cheap, id: gpt-4o-mini, price: {{input: 0.01, output: 0.02}}, context_window: 128000,
             features: [streaming]}}
  gpt-mini: {{provider: openai, id: gpt-4o-mini, price: {{input: 0.15, output: 0.6}}, context_window: 128000,
             features: {ALL}}}
  claude: {{provider: anthropic, id: claude-haiku-4-5, price: {{input: 1, output: 5}}, context_window: 200000,
           features: {ALL}}}
  gemini: {{provider: gemini, id: gemini-2.5-flash, price: {{input: 0.3, output: 2.5}}, context_window: 1000000,
           features: {ALL}}}
routes:
  - name: default
    strategy: cheapest
    candidates: [textonly, gpt-mini]
retry: {{max_attempts: 1, backoff_ms: 1, max_backoff_ms: 5}}
deadline_s: 30
health: {{min_requests: 1000}}
"""


@pytest.fixture
def server(fake: FakeVendorServer, tmp_path: Path) -> Iterator[ServerThread]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(tools_policy(fake))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        yield s


def client(server: ServerThread) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def needs(model: str, *options: str, images: bool = False) -> pytest.MarkDecorator:
    """Skip unless `model`'s adapter declares these options (and images)."""
    cls = ADAPTERS[model]
    missing = [o for o in options if o not in cls.supported_options]
    if images and not cls.supports_images:
        missing.append("images")
    return pytest.mark.skipif(bool(missing), reason=f"{cls.__name__} does not declare {', '.join(missing)} yet")


def vendors(*options: str, images: bool = False) -> list[object]:
    return [pytest.param(m, marks=needs(m, *options, images=images), id=m) for m in ADAPTERS]


WEATHER: openai.types.chat.ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather of a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                 "unit": {"enum": ["C", "F"]}},
                                "required": ["city", "unit"]}}}
ASK: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Oslo?"}]


class Forecast(pydantic.BaseModel):
    city: str
    days: int
    rain: bool


@pytest.mark.parametrize("model", vendors("tools"))
def test_tool_call(server: ServerThread, fake: FakeVendorServer, model: str) -> None:
    raw = client(server).chat.completions.with_raw_response.create(model=model, messages=ASK, tools=[WEATHER])
    r = raw.parse()
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and r.model == model
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("function", "get_weather", {"city": "x", "unit": "C"})]
    assert calls[0].id
    assert raw.headers["x-router-model"] == model
    assert fake.calls(VENDOR_OF[model]) == 1


@pytest.mark.parametrize("model", vendors("tools"))
def test_streamed_tool_call_is_reassembled_by_the_sdk(server: ServerThread, model: str) -> None:
    with client(server).chat.completions.stream(model=model, messages=ASK, tools=[WEATHER],
                                                stream_options={"include_usage": True}) as stream:
        kinds = {type(e).__name__ for e in stream}
        final = stream.get_final_completion()
    assert "FunctionToolCallArgumentsDeltaEvent" in kinds  # arguments arrived in fragments
    calls = final.choices[0].message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "x", "unit": "C"}
    assert final.choices[0].finish_reason == "tool_calls" and final.model == model
    assert final.usage is not None and final.usage.completion_tokens > 0


@pytest.mark.parametrize("model", vendors("tools"))
def test_parallel_tool_calls_keep_their_indexes(server: ServerThread, model: str) -> None:
    time_tool: openai.types.chat.ChatCompletionToolParam = {
        "type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
    with client(server).chat.completions.stream(
            model=model, tools=[WEATHER, time_tool],
            messages=[{"role": "user", "content": "Weather and time in Oslo, in parallel please"}]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "x", "unit": "C"}), ("get_time", {"zone": "x"})]
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize("model", vendors("tools"))
def test_tool_result_round_trip(server: ServerThread, fake: FakeVendorServer, model: str) -> None:
    c = client(server)
    first = c.chat.completions.create(model=model, messages=ASK, tools=[WEATHER])
    call = (first.choices[0].message.tool_calls or [])[0]
    history: list[openai.types.chat.ChatCompletionMessageParam] = [
        *ASK, first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "rain, 4 degrees"}]
    second = c.chat.completions.create(model=model, messages=history, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Tool get_weather returned: rain, 4 degrees"
    assert fake.calls(VENDOR_OF[model]) == 2


@pytest.mark.parametrize("model", vendors("response_format"))
def test_parse_with_a_pydantic_model(server: ServerThread, model: str) -> None:
    r = client(server).chat.completions.parse(model=model, messages=[{"role": "user", "content": "Forecast?"}],
                                              response_format=Forecast)
    assert r.choices[0].message.parsed == Forecast(city="x", days=1, rain=True)
    assert r.model == model


@pytest.mark.parametrize("model", vendors("response_format"))
def test_json_object(server: ServerThread, model: str) -> None:
    r = client(server).chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi as JSON"}],
                                               response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content or "") == {"echo": "Hi as JSON"}


@pytest.mark.parametrize("model", vendors(images=True))
def test_an_image(server: ServerThread, fake: FakeVendorServer, model: str) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
    r = client(server).chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in it?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}])
    assert (r.choices[0].message.content or "").endswith(" [images: 1]") and r.model == model
    assert png in json.dumps(fake.last_body(VENDOR_OF[model]))  # the bytes reached the vendor


def _plan_for_tools(fake: FakeVendorServer) -> tuple[str, ...]:
    """The plan `decide` makes for a tool request on the tools policy."""
    compiled = compile_policy(load_policy_text(tools_policy(fake)))
    return decide(compiled, Request.of(messages=ASK, tools=[WEATHER])).plan


@needs("gpt-mini", "tools")
def test_auto_skips_a_cheaper_model_without_the_feature(server: ServerThread, fake: FakeVendorServer) -> None:
    if "textonly" in _plan_for_tools(fake):
        pytest.skip("decide does not yet make a model without `tools` ineligible for a tool request")
    c = client(server)
    plain = c.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    assert plain.headers["x-router-model"] == "textonly"  # the cheapest serves plain text
    raw = c.chat.completions.with_raw_response.create(model="auto", messages=ASK, tools=[WEATHER])
    assert raw.headers["x-router-model"] == "gpt-mini" and raw.parse().model == "gpt-mini"
    assert raw.parse().choices[0].finish_reason == "tool_calls"
    assert fake.calls("cheap") == 1  # only the plain request: the tool request never reached it
    explained = httpx.post(server.url + "/v1/explain", json={"model": "auto", "messages": ASK,
                                                             "tools": [WEATHER]}).json()
    assert explained["plan"][0] == "gpt-mini" and "textonly" not in explained["plan"]
    textonly = next(c for c in explained["candidates"] if c["model"] == "textonly")
    assert not textonly["eligible"] and "tools" in textonly["reason"]
    with c.chat.completions.with_streaming_response.create(model="auto", messages=ASK, tools=[WEATHER],
                                                           stream=True) as streamed:
        assert streamed.headers["x-router-model"] == "gpt-mini"
        assert any("tool_calls" in line for line in streamed.iter_lines())
    assert fake.calls("cheap") == 1


# -- the Anthropic door, any vendor behind it --------------------------------------------------

ANTHROPIC_WEATHER: anthropic.types.ToolParam = {
    "name": "get_weather", "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def anthropic_client(server: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", [pytest.param(m, marks=needs(m, "tools"), id=m) for m in ("gpt-mini", "gemini")])
def test_anthropic_sdk_gets_tool_use_blocks_from_other_vendors(server: ServerThread, fake: FakeVendorServer,
                                                               model: str) -> None:
    c = anthropic_client(server)
    msg = c.messages.create(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER],
                            messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert msg.stop_reason == "tool_use" and msg.model == model
    uses = [b for b in msg.content if isinstance(b, anthropic.types.ToolUseBlock)]
    assert [(b.name, b.input) for b in uses] == [("get_weather", {"city": "x"})]
    assert fake.calls(VENDOR_OF[model]) == 1
    # the result goes back in Anthropic's shape and reaches the other vendor as its own tool result
    answer = c.messages.create(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER], messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},  # type: ignore[misc]
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}]}])
    assert answer.stop_reason == "end_turn"
    assert [b.text for b in answer.content if isinstance(b, anthropic.types.TextBlock)] == [
        "Tool get_weather returned: sunny"]
    # streamed: input_json_delta fragments, reassembled by the SDK
    with c.messages.stream(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER],
                           messages=[{"role": "user", "content": "Weather in Oslo?"}]) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert "input_json" in kinds and final.stop_reason == "tool_use"
    streamed = [b for b in final.content if isinstance(b, anthropic.types.ToolUseBlock)]
    assert [(b.name, b.input) for b in streamed] == [("get_weather", {"city": "x"})]


@pytest.mark.parametrize("model", vendors("response_format"))
def test_anthropic_sdk_parse_structured_output_on_any_vendor(server: ServerThread, model: str) -> None:
    msg = anthropic_client(server).messages.parse(model=model, max_tokens=200, output_format=Forecast,
                                                  messages=[{"role": "user", "content": "Forecast?"}])
    assert msg.parsed_output == Forecast(city="x", days=1, rain=True) and msg.model == model



@pytest.mark.skipif("seed" in AnthropicAdapter.supported_options, reason="the Anthropic adapter maps seed now")
def test_a_parameter_the_vendor_cannot_honour_is_a_400_naming_it(server: ServerThread, fake: FakeVendorServer) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model="claude", messages=ASK, seed=7)
    assert (e.value.status_code, e.value.param, e.value.code) == (400, "seed", "unsupported_parameter")
    assert fake.calls("anthropic") == 0  # refused before any call
    forwarded = client(server).chat.completions.create(model="gpt-mini", messages=ASK, seed=7, top_p=0.5)
    assert forwarded.model == "gpt-mini"
    assert (fake.last_body("openai")["seed"], fake.last_body("openai")["top_p"]) == (7, 0.5)

# -- the rest of the route table ------------------------------------------------------------------


def test_models_by_id_and_json_errors_for_unknown_paths(server: ServerThread) -> None:
    c = client(server)
    assert c.models.retrieve("gemini").owned_by == "gemini"
    assert c.models.retrieve("auto").owned_by == "router" and c.models.retrieve("default").id == "default"
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("gpt-9")
    assert e.value.code == "model_not_found"
    r = httpx.get(server.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "unknown_url" and "x-request-id" in r.headers
    r = httpx.get(server.url + "/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed" and r.headers["allow"] == "POST"
    r = httpx.post(server.url + "/v1/messages/batches", json={})
    assert r.status_code == 404 and r.json()["type"] == "error"  # Anthropic's shape under its prefix
    assert r.json()["error"]["type"] == "not_found_error"
