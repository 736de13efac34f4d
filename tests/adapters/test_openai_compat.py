"""OpenAI-compatible adapter: endpoint rows change the wire, not the code."""

from __future__ import annotations

import pytest
from syrupy.assertion import SnapshotAssertion

from adapters import InvalidInput, OpenAICompatibleAdapter, StreamEnd, build_adapter
from adapters.openai_compat import ENDPOINTS, CompatibleEndpoint
from tests.fakes import FakeVendorServer, tokens
from tests.fakes.clients import adapter_for


async def test_generic_row_sends_max_tokens(fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    adapter = adapter_for("openai_compatible", fake)
    try:
        await adapter.generate("hello compat", 77, 0.4)
        async for _ in adapter.stream("hello compat", 77, 0.4):
            pass
    finally:
        await adapter.aclose()
    bodies = [r.body for r in fake.requests("compat")]
    assert bodies == snapshot
    assert fake.calls("openai") == 0, "its own channel"


async def test_mistral_row_sends_no_stream_options_and_usage_is_estimated(fake: FakeVendorServer) -> None:
    adapter = adapter_for("openai_compatible", fake, endpoint="mistral")
    try:
        deltas: list[str] = []
        end = None
        async for ev in adapter.stream("estimate my usage", 100, 0.5):
            if isinstance(ev, StreamEnd):
                end = ev.completion
            else:
                deltas.append(ev.text)
        with pytest.raises(InvalidInput, match="between 0 and 1.5"):
            await adapter.generate("hi", 10, 1.8)
    finally:
        await adapter.aclose()
    body = fake.last_body("compat")
    assert "stream_options" not in body and body["max_tokens"] == 100
    assert end is not None
    # the fake sends no usage chunk without include_usage: the adapter estimated the counts
    assert end.output_tokens == tokens(end.text)
    assert end.input_tokens > 0


async def test_keyless_local_server(fake: FakeVendorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    adapter = build_adapter("openai_compatible", provider="vllm", model="llama", api_key=None,
                            base_url=fake.channel_url("vllm"), timeout_s=5, price=None, options={"endpoint": "vllm"})
    try:
        c = await adapter.generate("no key needed", 20, 0.1)
    finally:
        await adapter.aclose()
    assert c.text == "Echo from llama: no key needed" and c.cost_usd == 0.0
    assert fake.calls("vllm") == 1


def test_base_url_is_required_unless_the_row_has_one() -> None:
    with pytest.raises(InvalidInput, match="needs base_url"):
        OpenAICompatibleAdapter("x", "m")
    assert OpenAICompatibleAdapter("m", "mistral-small", endpoint="mistral", api_key="k")._base_url == (
        ENDPOINTS["mistral"].base_url
    )
    with pytest.raises(InvalidInput, match="unknown endpoint"):
        OpenAICompatibleAdapter("x", "m", base_url="http://127.0.0.1:1/v1", endpoint="nope")


async def test_a_custom_row(fake: FakeVendorServer) -> None:
    row = CompatibleEndpoint("strict", max_tokens_field="max_completion_tokens", stream_usage_option=False,
                             max_temperature=1.0)
    adapter = OpenAICompatibleAdapter("strict", "m", base_url=fake.channel_url("strict"), endpoint=row)
    try:
        await adapter.generate("hi", 12, 1.0)
    finally:
        await adapter.aclose()
    assert fake.last_body("strict")["max_completion_tokens"] == 12


@pytest.mark.parametrize("transport", ["sdk", "http"])
async def test_a_row_without_tools_or_vision_refuses_them_before_the_call(
    transport: str, fake: FakeVendorServer
) -> None:
    from adapters import BadRequest
    from adapters.openai_compat import COMPATIBLE_OPTIONS
    from adapters.openai_http import OpenAICompatibleHTTPAdapter

    row = CompatibleEndpoint("textonly", options=COMPATIBLE_OPTIONS - {"tools", "tool_choice", "parallel_tool_calls"},
                             images=False)
    cls = OpenAICompatibleAdapter if transport == "sdk" else OpenAICompatibleHTTPAdapter
    adapter = cls("t", "m", base_url=fake.channel_url("textonly"), endpoint=row)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    try:
        assert (adapter.supports_images, "tools" in adapter.supported_options) == (False, False)
        with pytest.raises(BadRequest, match="tools is not supported by openai_compatible model m"):
            await adapter.generate("hi", 12, 0.5, tools=tools)
        with pytest.raises(BadRequest, match="image input is not supported by openai_compatible model m"):
            await adapter.generate(messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://images.example.com/a.png"}}]}], max_tokens=12)
        assert fake.calls() == 0
        c = await adapter.generate("json please", 12, 0.5, seed=3, response_format={"type": "json_object"})
    finally:
        await adapter.aclose()
    assert c.text == '{"echo":"json please"}'
    assert fake.last_body("textonly")["seed"] == 3
