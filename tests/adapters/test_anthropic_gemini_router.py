"""The router over the Anthropic and Gemini adapters, as an app embedding it would use them:
tool calls across vendors, a tool-call fallback, streamed tool-call deltas, JSON and images."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import Router
from engine.runtime.result import RoutedDelta, StreamDone
from tests.adapters.surface_data import JSON_SCHEMA_FORMAT, PNG_B64, SCHEMA_VALUE, TOOLS, WEATHER_ARGS
from tests.fakes import FakeVendorServer
from tests.fakes.clients import TEST_KEYS


def _policy(fake: FakeVendorServer) -> str:
    return f"""version: 1
providers:
  anthropic:
    adapter: anthropic
    api_key: {TEST_KEYS['anthropic']}
    base_url: {fake.anthropic_url}
    timeout_s: 30
  gemini:
    adapter: gemini
    api_key: {TEST_KEYS['gemini']}
    base_url: {fake.gemini_url}
    timeout_s: 30
models:
  claude:
    provider: anthropic
    id: claude-haiku-4-5
    price: {{input: 1.0, output: 5.0}}
    context_window: 200000
    features: [streaming, tools, json, vision]
    scores: {{chat: 4}}
  gemini:
    provider: gemini
    id: gemini-2.5-flash
    price: {{input: 0.3, output: 2.5}}
    context_window: 1000000
    features: [streaming, tools, json, vision]
    scores: {{chat: 4}}
routes:
  - name: default
    strategy: ordered
    candidates: [claude, gemini]
retry: {{max_attempts: 1, backoff_ms: 1, max_backoff_ms: 5}}
deadline_s: 60
health: {{min_requests: 1000}}
"""


@pytest.fixture
async def router(fake: FakeVendorServer, tmp_path: Path) -> AsyncIterator[Router]:
    path = tmp_path / "policy.yaml"
    path.write_text(_policy(fake))
    async with Router.from_file(str(path), log_path=str(tmp_path / "decisions.db")) as r:
        yield r


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_a_tool_call_from_claude_is_answered_by_gemini(router: Router, fake: FakeVendorServer) -> None:
    first = await router.generate(messages=_user("Weather in Paris?"), max_tokens=200, tools=TOOLS, model="claude")
    assert first.model == "claude" and first.finish_reason == "tool_calls"
    (call,) = first.tool_calls
    assert (call.name, call.args()) == ("get_weather", WEATHER_ARGS)
    history = [*_user("Weather in Paris?"),
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
               {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = await router.generate(messages=history, max_tokens=200, tools=TOOLS, model="gemini")
    assert second.model == "gemini" and second.text == "Tool get_weather returned: sunny"
    # Gemini names the response after the call Claude made
    parts = fake.last_body("gemini")["contents"][-1]["parts"]
    assert parts == [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}]


async def test_a_tool_call_falls_back_to_the_next_model(router: Router, fake: FakeVendorServer) -> None:
    fake.set_mode("anthropic", "server_error")
    r = await router.generate(messages=_user("Weather in Paris?"), max_tokens=200, tools=TOOLS)
    assert r.model == "gemini" and r.attempts == 2
    assert [(c.name, c.args()) for c in r.tool_calls] == [("get_weather", WEATHER_ARGS)]


@pytest.mark.parametrize("model", ["claude", "gemini"])
async def test_streamed_tool_calls_through_the_router(router: Router, model: str) -> None:
    fragments: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    done: StreamDone | None = None
    async for event in router.stream(messages=_user("Weather and time, in parallel"), max_tokens=200,
                                     tools=TOOLS, model=model):
        if isinstance(event, RoutedDelta):
            assert event.model == model and event.tool_call is not None and event.text == ""
            d = event.tool_call
            if d.name:
                names[d.index] = d.name
            fragments.setdefault(d.index, []).append(d.arguments)
        else:
            done = event
    assert done is not None and done.result.finish_reason == "tool_calls"
    assert names == {0: "get_weather", 1: "get_time"}
    assert json.loads("".join(fragments[0])) == WEATHER_ARGS
    assert [c.name for c in done.result.tool_calls] == ["get_weather", "get_time"]


@pytest.mark.parametrize("model", ["claude", "gemini"])
async def test_json_schema_and_images_through_the_router(router: Router, model: str) -> None:
    r = await router.generate(messages=_user("Describe a person"), max_tokens=200,
                              response_format=JSON_SCHEMA_FORMAT, model=model)
    assert json.loads(r.text) == SCHEMA_VALUE
    url = f"data:image/png;base64,{PNG_B64}"
    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": url}}]}]
    r = await router.generate(messages=image, max_tokens=200, model=model)
    assert r.text.endswith(" [images: 1]")
