"""Gemini adapter: the exact request body, roles, blocks, and real google-genai exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.genai import errors as genai_errors
from syrupy.assertion import SnapshotAssertion

from adapters import (
    AuthError,
    BadRequest,
    ContextTooLong,
    GeminiAdapter,
    Message,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
)
from tests.fakes import FakeVendorServer
from tests.fakes.clients import adapter_for


@pytest.fixture
async def adapter(fake: FakeVendorServer) -> AsyncIterator[GeminiAdapter]:
    a = adapter_for("gemini", fake)
    assert isinstance(a, GeminiAdapter)
    yield a
    await a.aclose()


async def test_request_body_prompt(adapter: GeminiAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    await adapter.generate("What is 2+2?", 256, 0.2)
    req = fake.requests("gemini")[-1]
    assert req.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert req.headers["x-goog-api-key"] == "<redacted>"
    assert req.body == snapshot


async def test_request_body_conversation_roles_and_stop(
    adapter: GeminiAdapter, fake: FakeVendorServer, snapshot: SnapshotAssertion
) -> None:
    msgs = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello!"),
            Message("user", "Count to 3")]
    await adapter.generate(messages=msgs, max_tokens=64, temperature=0.0, stop=["4"], timeout_s=5)
    body = fake.last_body("gemini")
    assert body == snapshot
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]


async def test_request_stream_uses_sse(adapter: GeminiAdapter, fake: FakeVendorServer) -> None:
    async for _ in adapter.stream("stream this", 32, 1.0):
        pass
    req = fake.requests("gemini")[-1]
    assert req.path.endswith(":streamGenerateContent") and "alt=sse" in req.query


def _err(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> genai_errors.APIError:
    body: dict[str, Any] = {"error": {"code": code, "status": status, "message": message}}
    if details:
        body["error"]["details"] = details
    cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    return cls(code, body, None)


SDK_ERRORS: list[tuple[str, Exception, type[ProviderError], int | None]] = [
    ("429-retryinfo", _err(429, "RESOURCE_EXHAUSTED", "quota", [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]), RateLimited, 429),
    ("503", _err(503, "UNAVAILABLE", "The model is overloaded."), Overloaded, 503),
    ("500", _err(500, "INTERNAL", "boom"), ServerError, 500),
    ("400-key", _err(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]), AuthError, 400),
    ("403", _err(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"), AuthError, 403),
    ("400-tokens", _err(400, "INVALID_ARGUMENT",
                        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."),
     ContextTooLong, 400),
    ("400", _err(400, "INVALID_ARGUMENT", "Invalid value at 'generation_config.temperature'"), BadRequest, 400),
    ("404", _err(404, "NOT_FOUND", "models/nope is not found"), BadRequest, 404),
    ("malformed", genai_errors.UnknownApiResponseError("Failed to parse response as JSON."), ServerError, None),
]


@pytest.mark.parametrize(("exc", "expected", "status"), [e[1:] for e in SDK_ERRORS], ids=[e[0] for e in SDK_ERRORS])
async def test_sdk_exceptions_map_at_the_choke_point(
    adapter: GeminiAdapter, exc: Exception, expected: type[ProviderError], status: int | None
) -> None:
    with pytest.raises(ProviderError) as info, adapter._map_errors():
        raise exc
    err = info.value
    assert type(err) is expected
    assert err.status == status
    assert err.__cause__ is exc
    if status == 429:
        assert err.retry_after == 17.0
