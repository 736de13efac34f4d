"""Anthropic Messages API through the official `anthropic` SDK (imported on first use)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from adapters.base import LLMAdapter, Price, Reply, Request, Usage
from adapters.errors import (
    AuthError,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
    class_for_status,
    parse_retry_after,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = ["AnthropicAdapter"]

_PIP = "pip install 'anthropic>=0.40'"
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}
# error.type of an error event inside a 200 stream, where the HTTP status says nothing
_BY_TYPE: dict[str, type[ProviderError]] = {
    "overloaded_error": Overloaded,
    "rate_limit_error": RateLimited,
    "api_error": ServerError,
    "timeout_error": Timeout,
    "authentication_error": AuthError,
    "permission_error": AuthError,
    "billing_error": AuthError,
    "invalid_request_error": BadRequest,
    "not_found_error": BadRequest,
    "request_too_large": BadRequest,
}


class AnthropicAdapter(LLMAdapter):
    """Anthropic's `POST /v1/messages`.

    Args:
        provider: Provider name.
        model: Claude model id.
        api_key: The key; defaults to the `ANTHROPIC_API_KEY` environment variable.
        base_url: Override of `https://api.anthropic.com` (proxies, fakes).
        price: USD per million tokens.
        timeout_s: Default attempt timeout.
        headers: Extra HTTP headers sent with every request (e.g. `anthropic-beta`).
        send_temperature: Send `temperature` (as an extra body field). Off by default: the
            installed SDK's Messages API has no sampling parameters any more, so the temperature
            is validated (0-1) but not sent unless a model or proxy still wants it.
    """

    kind = "anthropic"
    max_temperature = 1.0

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        price: Price | None = None,
        timeout_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        send_temperature: bool = False,
    ) -> None:
        super().__init__(provider, model, price=price, timeout_s=timeout_s)
        self._send_temperature = send_temperature
        if importlib.util.find_spec("anthropic") is None:
            raise ImportError(f"the anthropic adapter needs the Anthropic SDK: {_PIP}")
        self._api_key = api_key
        self._base_url = base_url
        self._headers = dict(headers) if headers else None
        self._client: AsyncAnthropic | None = None
        self._secrets = tuple(s for s in (api_key,) if s)

    def _warm(self) -> None:
        self._get_client()

    def _get_client(self) -> AsyncAnthropic:
        client = self._client
        if client is None:
            import anthropic

            # an explicit key keeps the SDK from searching profiles and federation settings
            key = self._key_or_env(self._api_key, "ANTHROPIC_API_KEY")
            client = self._client = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=self._base_url,
                default_headers=self._headers,
                max_retries=0,  # the router owns retries
                timeout=self.timeout_s,
            )
        return client

    async def _probe(self, timeout_s: float) -> None:
        await self._get_client().models.retrieve(self.model, timeout=timeout_s)

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # ------------------------------------------------------------- translate

    def _params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.turns],
            # explicit, so the SDK does not estimate a non-streaming timeout from max_tokens
            "timeout": request.timeout_s,
        }
        system = request.system
        if system is not None:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if self._send_temperature:
            params["extra_body"] = {"temperature": request.temperature}
        return params

    async def _complete(self, request: Request) -> Reply:
        msg = await self._get_client().messages.create(**self._params(request))
        text = "".join(block.text for block in msg.content if block.type == "text")
        usage = msg.usage
        input_tokens = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (
            usage.cache_read_input_tokens or 0
        )
        return Reply(text, self._usage(msg.stop_reason, input_tokens, usage.output_tokens))

    async def _stream(self, request: Request) -> AsyncIterator[str | Usage]:
        stream = await self._get_client().messages.create(**self._params(request), stream=True)
        input_tokens: int | None = None
        output_tokens: int | None = None
        stop_reason: str | None = None
        finished = False
        try:
            async for event in stream:
                kind = event.type
                if kind == "content_block_delta":
                    if event.delta.type == "text_delta":
                        yield event.delta.text
                elif kind == "message_start":
                    u = event.message.usage
                    input_tokens = u.input_tokens + (u.cache_creation_input_tokens or 0) + (
                        u.cache_read_input_tokens or 0
                    )
                elif kind == "message_delta":
                    stop_reason = event.delta.stop_reason
                    output_tokens = event.usage.output_tokens
                elif kind == "message_stop":
                    finished = True
        finally:
            await stream.close()
        if not finished:
            raise self._error(ServerError, "stream ended before message_stop")
        yield self._usage(stop_reason, input_tokens, output_tokens)

    def _usage(self, stop_reason: str | None, input_tokens: int | None, output_tokens: int | None) -> Usage:
        if stop_reason == "refusal":
            raise self._error(ContentFiltered, "the model's safety system ended the turn (stop_reason: refusal)")
        return Usage(_FINISH.get(stop_reason or "", "other"), input_tokens, output_tokens)

    def _translate_error(self, exc: Exception) -> ProviderError | None:
        anthropic = sys.modules.get("anthropic")
        if anthropic is None or not isinstance(exc, anthropic.AnthropicError):
            return None
        if isinstance(exc, anthropic.APITimeoutError):
            return self._error(Timeout, "no answer within the timeout")
        if isinstance(exc, anthropic.APIConnectionError):
            return self._connection_error(exc)
        if isinstance(exc, anthropic.APIStatusError):
            err_type, message = _error_fields(exc.body, exc.message)
            status: int | None = exc.status_code
            if status is not None and status >= 400:
                cls = class_for_status(status)
            else:  # an `event: error` inside a 200 stream
                cls, status = _BY_TYPE.get(err_type, ServerError), None
            if cls is BadRequest and "prompt is too long" in message.lower():
                cls = ContextTooLong
            return self._error(cls, message, status=status, retry_after=parse_retry_after(exc.response.headers))
        if isinstance(exc, anthropic.APIError):
            return self._error(ServerError, f"malformed or unexpected response: {exc.message}")
        return self._error(AuthError if "credential" in str(exc).lower() else BadRequest, str(exc))


def _error_fields(body: object, fallback: str) -> tuple[str, str]:
    """(error.type, error.message) of an Anthropic error body."""
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            return str(err.get("type") or ""), str(err.get("message") or fallback)
    return "", fallback
