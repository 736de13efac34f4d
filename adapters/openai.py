"""OpenAI Chat Completions through the official `openai` SDK (imported on first use)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from adapters.base import LLMAdapter, Price, Reply, Request, ToolCallDelta, Usage
from adapters.errors import (
    AuthError,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ProviderError,
    ServerError,
    Timeout,
    class_for_status,
    parse_retry_after,
)
from adapters.openai_wire import (
    OPENAI_OPTIONS,
    ChunkReader,
    MalformedAnswer,
    SSEDecoder,
    chat_body,
    read_completion,
    sdk_arguments,
    usage_of,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["DRAIN_S", "OpenAIAdapter"]

DRAIN_S = 0.1
"""After [DONE], how long the body's end is read so that its connection can be reused (as the SDK does)."""

_PIP = "pip install 'openai>=1.50'"
_CONTEXT_CODES = frozenset(("context_length_exceeded", "string_above_max_length"))
_FILTER_CODES = frozenset(("content_filter", "content_policy_violation"))


def _require_sdk(kind: str) -> None:
    # find_spec does not import: a missing SDK is reported when the policy is loaded, cheaply
    if importlib.util.find_spec("openai") is None:
        raise ImportError(f"the {kind} adapter needs the OpenAI SDK: {_PIP}")


class OpenAIAdapter(LLMAdapter):
    """OpenAI's `POST /v1/chat/completions`.

    Args:
        provider: Provider name.
        model: OpenAI model id.
        api_key: The key; defaults to the `OPENAI_API_KEY` environment variable.
        base_url: Override of `https://api.openai.com/v1` (proxies, fakes).
        price: USD per million tokens.
        timeout_s: Default attempt timeout.
        organization: Optional OpenAI organization id.
        headers: Extra HTTP headers sent with every request.
        send_temperature: False for models that only accept their default temperature
            (OpenAI's reasoning models); the temperature is still validated.
    """

    kind = "openai"
    sdk_modules = ("openai",)
    max_temperature = 2.0
    max_stop_sequences = 4
    supported_options = OPENAI_OPTIONS
    supports_images = True

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        price: Price | None = None,
        timeout_s: float = 30.0,
        organization: str | None = None,
        headers: Mapping[str, str] | None = None,
        send_temperature: bool = True,
    ) -> None:
        super().__init__(provider, model, price=price, timeout_s=timeout_s)
        _require_sdk(self.kind)
        self._send_temperature = send_temperature
        self._api_key = api_key
        self._base_url = base_url
        self._organization = organization
        self._headers = dict(headers) if headers else None
        self._env_key: str | None = "OPENAI_API_KEY"  # read when no api_key is given
        self._key_required = True  # False: keyless local servers get a placeholder key
        # OpenAI deprecated `max_tokens` for `max_completion_tokens`; compatible servers mostly want the former
        self._max_tokens_field = "max_completion_tokens"
        self._stream_usage = True  # ask for usage in the last chunk (stream_options.include_usage)
        self._seed_field = "seed"
        self._client: AsyncOpenAI | None = None
        self._secrets = tuple(s for s in (api_key,) if s)

    # ---------------------------------------------------------------- client

    def _resolve_key(self) -> str:
        env = (self._env_key,) if self._env_key else ()
        # keyless local servers (vLLM, Ollama) still need some bearer value for the SDK
        return self._key_or_env(self._api_key, *env, required=self._key_required) or "no-key"

    def _warm(self) -> None:
        self._get_client()

    def _get_client(self) -> AsyncOpenAI:
        client = self._client
        if client is None:
            import openai

            key = self._resolve_key()
            client = self._client = openai.AsyncOpenAI(
                api_key=key,
                base_url=self._base_url,
                organization=self._organization,
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

    def _check_options(self, request: Request) -> None:
        super()._check_options(request)
        opts = request.options
        # OpenAI keeps metadata only on stored completions and answers 400 otherwise; storing the
        # caller's conversation is not ours to switch on, so it must ask (a pass-through `store`)
        if opts.metadata is not None and self.kind == "openai" and not (opts.extra_body or {}).get("store"):
            raise self._error(
                BadRequest, f"metadata needs store: true for {self.kind} model {self.model} (OpenAI keeps metadata "
                "only on stored completions): let `store` through (provider option pass_through) and send it",
            )

    def _body(self, request: Request, *, stream: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """(SDK fields in the SDK's order, extra fields): this adapter's settings applied to `chat_body`."""
        return chat_body(
            request, self.model, max_tokens_field=self._max_tokens_field, send_temperature=self._send_temperature,
            stream=stream, stream_usage=self._stream_usage, seed_field=self._seed_field,
        )

    def _params(self, request: Request, *, stream: bool = False) -> dict[str, Any]:
        params = sdk_arguments(*self._body(request, stream=stream))
        params["timeout"] = request.timeout_s
        return params

    def _answer(self, data: Any) -> Reply:
        """A `chat.completion` (as a dict) to our reply; content filter and refusals raise."""
        try:
            answer = read_completion(data)
        except MalformedAnswer as exc:
            raise self._error(ServerError, str(exc)) from None
        if answer.finish == "content_filter" and not answer.text and not answer.tool_calls:
            # nothing came back: a refusal; with partial output (Azure cuts answers) the caller gets
            # that output and finish_reason content_filter, as OpenAI's own clients do
            raise self._error(ContentFiltered, "the answer was withheld by the vendor's content filter")
        if answer.refusal and not answer.text and not answer.tool_calls:
            raise self._error(ContentFiltered, f"the model refused: {answer.refusal}")
        return Reply(answer.text or "", usage_of(answer.finish, answer.usage), answer.tool_calls)

    def _ended(self, reader: ChunkReader) -> Usage:
        """The stream's end: its finish reason checked, its usage."""
        if reader.finish is None:
            raise self._error(ServerError, "stream ended without a finish_reason")
        if reader.finish == "content_filter" and not reader.produced:
            raise self._error(ContentFiltered, "the answer was withheld by the vendor's content filter")
        return usage_of(reader.finish, reader.usage)

    async def _complete(self, request: Request) -> Reply:
        resp = await self._get_client().chat.completions.create(**self._params(request))
        return self._answer(resp.to_dict())

    async def _stream(self, request: Request) -> AsyncIterator[str | ToolCallDelta | Usage]:
        # The SDK builds, sends and checks the request (a non-2xx raises its status error) and
        # hands over the body; its events are decoded here, as on the http transport. The SDK's
        # own iterator would build a pydantic model of every chunk (~0.1 ms each, two before the
        # first text) only for `to_dict()` to turn it back into the dict it was parsed from.
        create = self._get_client().chat.completions.with_streaming_response.create
        async with create(**self._params(request, stream=True)) as response:
            http = response.http_response
            async with contextlib.aclosing(_sdk_reads(http)) as reads:
                async for item in self._events(reads, lambda: _drain(reads)):
                    yield item

    async def _events(self, reads: AsyncIterator[bytes], finish: Callable[[], Awaitable[None]],
                      ) -> AsyncIterator[str | ToolCallDelta | Usage]:
        """A 2xx stream's events from the body's reads, up to [DONE] (then the body's end is drained)."""
        reader = ChunkReader()
        decoder = SSEDecoder()
        done = False
        async for raw in reads:
            for data in decoder.feed(raw):
                if data.startswith("[DONE]"):
                    done = True
                    break
                for item in reader.read(self._chunk(data)):
                    yield item
            if done:
                await finish()
                break
        yield self._ended(reader)

    def _chunk(self, data: str) -> Mapping[str, Any]:
        """One event's chunk; an error event raises as the SDK raises it."""
        chunk = json.loads(data)
        if not isinstance(chunk, Mapping):
            raise self._error(ServerError, f"malformed stream event: {data[:200]}")
        if chunk.get("error"):
            raise self._stream_error(chunk["error"])
        return chunk

    def _stream_error(self, error: Any) -> ProviderError:
        # what the SDK raises as APIError for an error event inside a 200 stream, mapped as the SDK path maps it
        body = error if isinstance(error, Mapping) else {}
        message = body.get("message")
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        return self._error(self._refine(body, message) or ServerError, message)

    def _translate_error(self, exc: Exception) -> ProviderError | None:
        openai = sys.modules.get("openai")
        if openai is None or not isinstance(exc, openai.OpenAIError):
            return None
        if isinstance(exc, openai.APITimeoutError):
            return self._error(Timeout, f"no answer within the timeout: {exc.message}")
        if isinstance(exc, openai.APIConnectionError):
            return self._connection_error(exc)
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, Mapping) else {}
            message = str(body.get("message") or exc.message)
            cls = class_for_status(exc.status_code)
            if cls is BadRequest:
                cls = self._refine(body, message) or BadRequest
            return self._error(
                cls, message, status=exc.status_code, retry_after=parse_retry_after(exc.response.headers)
            )
        if isinstance(exc, openai.APIResponseValidationError):
            return self._error(ServerError, f"malformed response: {exc.message}", status=exc.status_code)
        if isinstance(exc, openai.APIError):
            # an error event inside a 200 stream: the body is the vendor's error object
            body = exc.body if isinstance(exc.body, Mapping) else {}
            return self._error(self._refine(body, exc.message) or ServerError, exc.message)
        if "api_key" in str(exc):
            return self._error(AuthError, str(exc))
        return self._error(BadRequest, str(exc))

    @staticmethod
    def _refine(body: Mapping[str, Any], message: str) -> type[ProviderError] | None:
        code = str(body.get("code") or "")
        lowered = message.lower()
        if code in _CONTEXT_CODES or "maximum context length" in lowered or "context window" in lowered:
            return ContextTooLong
        if code in _FILTER_CODES or "content management policy" in lowered:
            return ContentFiltered
        return None


async def _sdk_reads(http: Any) -> AsyncGenerator[bytes, None]:
    """The body of the SDK's streamed response, its transport errors raised as the SDK's stream
    raises them (`APITimeoutError`, `APIConnectionError`), so that they map as before."""
    import ssl

    import openai

    httpx = sys.modules[type(http).__module__.partition(".")[0]]  # httpx or httpx2, whichever the SDK uses
    try:
        async for raw in http.aiter_bytes():
            yield raw
    except httpx.TimeoutException as err:
        raise openai.APITimeoutError(request=http.request) from err
    except (httpx.RequestError, ssl.SSLError) as err:
        raise openai.APIConnectionError(request=http.request) from err


async def _drain(reads: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE] for a little while: a finished HTTP/1.1 body keeps its connection."""
    async def read_all() -> None:
        async for _ in reads:
            pass

    with contextlib.suppress(Exception):  # a body left unread drops its connection; the completion is whole
        await asyncio.wait_for(read_all(), DRAIN_S)
