"""Anthropic adapter: the exact request body, refusals, stream error events, real SDK exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2
import pytest
from syrupy.assertion import SnapshotAssertion

from adapters import (
    AnthropicAdapter,
    AuthError,
    BadRequest,
    ContextTooLong,
    Message,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)
from tests.fakes import FakeVendorServer
from tests.fakes.clients import adapter_for


@pytest.fixture
async def adapter(fake: FakeVendorServer) -> AsyncIterator[AnthropicAdapter]:
    a = adapter_for("anthropic", fake)
    assert isinstance(a, AnthropicAdapter)
    yield a
    await a.aclose()


async def test_request_body_prompt(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    await adapter.generate("What is 2+2?", 256, 0.2)
    assert fake.last_body("anthropic") == snapshot


async def test_request_body_system_conversation_stop(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    msgs = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello!"),
            Message("system", "Use digits."), Message("user", "Count to 3")]
    await adapter.generate(messages=msgs, max_tokens=64, temperature=0.0, stop=["4"])
    body = fake.last_body("anthropic")
    assert body == snapshot
    assert body["system"] == "Be brief.\n\nUse digits."


async def test_request_body_stream(
    adapter: AnthropicAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    async for _ in adapter.stream("stream this", 32, 1.0):
        pass
    assert fake.last_body("anthropic") == snapshot


async def test_temperature_is_sent_only_when_asked(fake: FakeVendorServer) -> None:
    a = adapter_for("anthropic", fake, send_temperature=True)
    try:
        await a.generate("hi", 10, 0.25)
    finally:
        await a.aclose()
    assert fake.last_body("anthropic")["temperature"] == 0.25


_REQ = httpx2.Request("POST", "http://127.0.0.1/v1/messages")


def _status(cls: type[anthropic.APIStatusError], status: int, err_type: str, message: str,
            headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    body = {"type": "error", "error": {"type": err_type, "message": message}}
    return cls(f"Error code: {status}", response=httpx2.Response(status, request=_REQ, headers=headers), body=body)


SDK_ERRORS: list[tuple[str, anthropic.AnthropicError, type[ProviderError], int | None]] = [
    ("429", _status(anthropic.RateLimitError, 429, "rate_limit_error", "slow", {"retry-after": "7"}),
     RateLimited, 429),
    ("529", _status(anthropic.OverloadedError, 529, "overloaded_error", "Overloaded"), Overloaded, 529),
    ("500", _status(anthropic.InternalServerError, 500, "api_error", "boom"), ServerError, 500),
    ("401", _status(anthropic.AuthenticationError, 401, "authentication_error", "invalid x-api-key"), AuthError, 401),
    ("403", _status(anthropic.PermissionDeniedError, 403, "permission_error", "no"), AuthError, 403),
    ("400-too-long", _status(anthropic.BadRequestError, 400, "invalid_request_error",
                             "prompt is too long: 208310 tokens > 200000 maximum"), ContextTooLong, 400),
    ("400", _status(anthropic.BadRequestError, 400, "invalid_request_error", "bad"), BadRequest, 400),
    ("413", _status(anthropic.ContentTooLargeError, 413, "request_too_large", "32MB max"), BadRequest, 413),
    ("stream-overloaded", _status(anthropic.APIStatusError, 200, "overloaded_error", "Overloaded"), Overloaded, None),
    ("stream-rate-limit", _status(anthropic.APIStatusError, 200, "rate_limit_error", "slow"), RateLimited, None),
    ("stream-unknown-type", _status(anthropic.APIStatusError, 200, "brand_new_error", "?"), ServerError, None),
    ("timeout", anthropic.APITimeoutError(request=_REQ), Timeout, None),
    ("connection", anthropic.APIConnectionError(request=_REQ), ServerError, None),
]


@pytest.mark.parametrize(("exc", "expected", "status"), [e[1:] for e in SDK_ERRORS], ids=[e[0] for e in SDK_ERRORS])
async def test_sdk_exceptions_map_at_the_choke_point(
    adapter: AnthropicAdapter, exc: anthropic.AnthropicError, expected: type[ProviderError], status: int | None
) -> None:
    with pytest.raises(ProviderError) as info, adapter._map_errors():
        raise exc
    err = info.value
    assert type(err) is expected
    assert err.status == status
    assert err.__cause__ is exc
    if status == 429:
        assert err.retry_after == 7.0
