"""OpenAI adapter: the exact request body, response parsing, and mapping of real SDK exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai
import pytest
from syrupy.assertion import SnapshotAssertion

from adapters import (
    AuthError,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    Message,
    OpenAIAdapter,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)
from tests.fakes import FakeVendorServer
from tests.fakes.clients import adapter_for


@pytest.fixture
async def adapter(fake: FakeVendorServer) -> AsyncIterator[OpenAIAdapter]:
    a = adapter_for("openai", fake)
    assert isinstance(a, OpenAIAdapter)
    yield a
    await a.aclose()


async def test_request_body_prompt(adapter: OpenAIAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    await adapter.generate("What is 2+2?", 256, 0.2)
    assert fake.last_body("openai") == snapshot


async def test_request_body_conversation_with_stop(
    adapter: OpenAIAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    msgs = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello!"),
            Message("user", "Count to 3")]
    await adapter.generate(messages=msgs, max_tokens=64, temperature=0.0, stop=["4", "\n\n"])
    assert fake.last_body("openai") == snapshot


async def test_request_body_stream(adapter: OpenAIAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    async for _ in adapter.stream("stream this", 32, 1.0):
        pass
    assert fake.last_body("openai") == snapshot
    req = fake.requests("openai")[-1]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "<redacted>"
    assert req.headers["x-stainless-retry-count"] == "0"


async def test_at_most_four_stop_sequences(adapter: OpenAIAdapter, fake: FakeVendorServer) -> None:
    from adapters import InvalidInput

    with pytest.raises(InvalidInput, match="at most 4"):
        await adapter.generate("hi", 10, 0.5, stop=["a", "b", "c", "d", "e"])
    assert fake.calls() == 0


async def test_reasoning_models_get_no_temperature(fake: FakeVendorServer) -> None:
    a = adapter_for("openai", fake, model="o4-mini", send_temperature=False)
    try:
        await a.generate("think", 100, 0.7)
    finally:
        await a.aclose()
    assert "temperature" not in fake.last_body("openai")


_REQ = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")


def _status(cls: type[openai.APIStatusError], status: int, body: object, headers: dict[str, str] | None = None
            ) -> openai.APIStatusError:
    return cls(f"Error code: {status}", response=httpx2.Response(status, request=_REQ, headers=headers), body=body)


SDK_ERRORS: list[tuple[str, openai.OpenAIError, type[ProviderError], int | None]] = [
    ("429", _status(openai.RateLimitError, 429, {"message": "slow", "code": "rate_limit_exceeded"},
                    {"retry-after-ms": "1500"}), RateLimited, 429),
    ("429-quota", _status(openai.RateLimitError, 429, {"message": "quota", "code": "insufficient_quota"}),
     RateLimited, 429),
    ("500", _status(openai.InternalServerError, 500, {"message": "boom"}), ServerError, 500),
    ("502", _status(openai.InternalServerError, 502, "<html>bad gateway</html>"), ServerError, 502),
    ("503", _status(openai.InternalServerError, 503, {"message": "overloaded"}), Overloaded, 503),
    ("504", _status(openai.InternalServerError, 504, None), Timeout, 504),
    ("401", _status(openai.AuthenticationError, 401, {"message": "bad key", "code": "invalid_api_key"}),
     AuthError, 401),
    ("403", _status(openai.PermissionDeniedError, 403, {"message": "region"}), AuthError, 403),
    ("404", _status(openai.NotFoundError, 404, {"message": "no such model", "code": "model_not_found"}),
     BadRequest, 404),
    ("400-context", _status(openai.BadRequestError, 400, {"message": "too long", "code": "context_length_exceeded"}),
     ContextTooLong, 400),
    ("400-context-by-message", _status(openai.BadRequestError, 400, {
        "message": "This model's maximum context length is 8192 tokens"}), ContextTooLong, 400),
    ("400-filter", _status(openai.BadRequestError, 400, {"message": "filtered", "code": "content_filter"}),
     ContentFiltered, 400),
    ("422", _status(openai.UnprocessableEntityError, 422, {"message": "bad field"}), BadRequest, 422),
    ("timeout", openai.APITimeoutError(request=_REQ), Timeout, None),
    ("connection", openai.APIConnectionError(request=_REQ), ServerError, None),
    ("stream-error-event", openai.APIError("An error occurred during streaming", _REQ,
                                           body={"type": "server_error", "code": None}), ServerError, None),
    ("validation", openai.APIResponseValidationError(httpx2.Response(200, request=_REQ), body={}),
     ServerError, 200),
]


@pytest.mark.parametrize(("exc", "expected", "status"), [e[1:] for e in SDK_ERRORS], ids=[e[0] for e in SDK_ERRORS])
async def test_sdk_exceptions_map_at_the_choke_point(
    adapter: OpenAIAdapter, exc: openai.OpenAIError, expected: type[ProviderError], status: int | None
) -> None:
    with pytest.raises(ProviderError) as info, adapter._map_errors():
        raise exc
    err = info.value
    assert type(err) is expected
    assert err.status == status
    assert err.__cause__ is exc
    assert (err.provider, err.model) == ("fake-openai", "gpt-4o-mini")
    if expected is RateLimited and status == 429 and "slow" in err.message:
        assert err.retry_after == 1.5


async def test_non_vendor_exceptions_pass_through(adapter: OpenAIAdapter) -> None:
    with pytest.raises(KeyError), adapter._map_errors():
        raise KeyError("a bug of ours stays a bug")


_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True}}


async def test_request_bodies_of_the_surface(
    adapter: OpenAIAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    """Tools, tool choice, a tool round trip, JSON schema output, images and sampling, as OpenAI gets them."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    await adapter.generate(messages=[Message("user", "weather?")], max_tokens=50, temperature=0.0, tools=[_WEATHER],
                           tool_choice={"type": "function", "function": {"name": "get_weather"}},
                           parallel_tool_calls=False)
    await adapter.generate(messages=[{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "weather?"},
                                     {"role": "assistant", "content": None, "tool_calls": [call]},
                                     {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
                           max_tokens=50, temperature=0.0, tools=[_WEATHER], tool_choice="auto")
    await adapter.generate("a person", 50, 0.0, response_format={"type": "json_schema", "json_schema": {
        "name": "person", "schema": {"type": "object", "properties": {"name": {"type": "string"}},
                                     "required": ["name"], "additionalProperties": False}, "strict": True}})
    await adapter.generate(messages=[{"role": "user", "content": [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": "https://images.example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_PNG}"}}]}], max_tokens=50)
    async for _ in adapter.stream("sample", 50, 0.5, top_p=0.9, seed=42, presence_penalty=0.5,
                                  frequency_penalty=-0.5, user="user-1", response_format={"type": "json_object"}):
        pass
    assert [r.body for r in fake.requests("openai")] == snapshot


async def test_tool_calls_and_finish_reasons_are_parsed(adapter: OpenAIAdapter) -> None:
    c = await adapter.generate("weather in Paris?", 50, 0.0, tools=[_WEATHER])
    assert (c.text, c.finish_reason) == ("", "tool_calls")
    assert [(t.id, t.name, t.arguments) for t in c.tool_calls] == [("call_1", "get_weather", '{"city":"x"}')]


async def test_metadata_needs_store_let_through(fake: FakeVendorServer) -> None:
    plain = adapter_for("openai", fake)
    stored = adapter_for("openai", fake, pass_through=["store"])
    try:
        with pytest.raises(BadRequest, match="metadata needs store: true for openai model gpt-4o-mini"):
            await plain.generate("hi", 10, 0.5, metadata={"team": "a"})
        with pytest.raises(BadRequest, match="metadata needs store"):
            await stored.generate("hi", 10, 0.5, metadata={"team": "a"})
        assert fake.calls() == 0
        await stored.generate("hi", 10, 0.5, metadata={"team": "a"}, extra_body={"store": True})
    finally:
        await plain.aclose()
        await stored.aclose()
    body = fake.last_body("openai")
    assert (body["metadata"], body["store"]) == ({"team": "a"}, True)


async def test_compatible_rows_declare_what_their_servers_take(fake: FakeVendorServer) -> None:
    from adapters.openai_compat import ENDPOINTS

    mistral = adapter_for("openai_compatible", fake, endpoint="mistral")
    try:
        assert "user" not in mistral.supported_options and "metadata" not in mistral.supported_options
        with pytest.raises(BadRequest, match="user is not supported by openai_compatible model"):
            await mistral.generate("hi", 10, 0.5, user="u-1")
        await mistral.generate("hi", 10, 0.5, seed=5)
    finally:
        await mistral.aclose()
    body = fake.last_body("compat")
    assert body["random_seed"] == 5 and "seed" not in body
    assert "parallel_tool_calls" not in ENDPOINTS["ollama"].options
