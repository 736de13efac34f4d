"""OpenAI Chat Completions over one plain `httpx.AsyncClient`: the lean transport of the service path.

The SDK adapters (`adapters.openai`, `adapters.openai_compat`) stay the reference behaviour;
these subclasses keep everything they decide (request mapping, endpoint rows, key handling,
refinement of error bodies) and replace only the wire: the SDK's client and pydantic parsing
cost about twice the CPU of a plain httpx POST and `json.loads` (loopback, one request at a time).

Parity with the SDK path, which the contract tests assert over every fault:

- the same JSON body, byte for byte (same fields, key order and separators);
- the same error classes, statuses and `retry_after` (status first, then the body's
  context-length / content-filter codes), and the same message wherever the vendor gave one;
  httpx's own exceptions are kept as `__cause__`.

Selected with the provider option `transport: http` (see `adapters.registry`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx  # a dependency of the package; this module is imported only when `transport: http` is chosen

from adapters.base import Reply, Request, Usage
from adapters.errors import BadRequest, ContentFiltered, ProviderError, ServerError, class_for_status, parse_retry_after
from adapters.openai import _FINISH, OpenAIAdapter
from adapters.openai_compat import OpenAICompatibleAdapter

__all__ = ["OpenAICompatibleHTTPAdapter", "OpenAIHTTPAdapter"]

# The SDK's own serialisation (`openai._utils._json.openapi_dumps`): compact, UTF-8, no NaN.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The SDK writes the body in its `create()` signature's order; following it keeps the bytes identical.
_SDK_ORDER = (
    "model", "stream", "messages", "max_completion_tokens", "max_tokens", "stop", "stream_options", "temperature",
)
# Up to 1000 connections as the SDK, but every idle one is kept (the SDK keeps 100): under the
# service's concurrency each in-flight call has its own connection, and closing them churns TCP.
_MAX_CONNECTIONS = 1000
_MAX_KEEPALIVE = 1000
_KEEPALIVE_EXPIRY_S = 5.0  # httpx's and the SDK's default; uvicorn-served upstreams (vLLM) close idle ones at 5 s
_DRAIN_S = 0.1  # after [DONE], how long to read the body's end so the connection can be reused (as the SDK)
_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class _ChatCompletionsOverHTTP(OpenAIAdapter):
    """The transport swap: `_complete`, `_stream`, the client and status errors; the rest is inherited."""

    _http: httpx.AsyncClient | None = None
    """The shared client, created on first use (after the key is resolved)."""
    _url: str = ""
    """`{base_url}/chat/completions`, fixed with the client."""

    # ---------------------------------------------------------------- client

    def _warm(self) -> None:
        self._get_http()

    def _get_http(self) -> httpx.AsyncClient:
        client = self._http
        if client is None:
            key = self._resolve_key()
            self._secrets = tuple({*self._secrets, key})
            # the environment fallbacks the SDK client applies, so both transports reach the same place
            base_url = self._base_url or os.environ.get("OPENAI_BASE_URL") or _DEFAULT_BASE_URL
            organization = self._organization or os.environ.get("OPENAI_ORG_ID")
            project = os.environ.get("OPENAI_PROJECT_ID")
            headers = {
                "Accept": "application/json", "Content-Type": "application/json", "Authorization": f"Bearer {key}",
            }
            if organization:
                headers["OpenAI-Organization"] = organization
            if project:
                headers["OpenAI-Project"] = project
            headers.update(self._headers or {})  # the caller's headers win, as with the SDK's default_headers
            self._url = base_url.rstrip("/") + "/chat/completions"
            client = self._http = httpx.AsyncClient(
                headers=headers,
                timeout=self.timeout_s,
                limits=httpx.Limits(
                    max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE,
                    keepalive_expiry=_KEEPALIVE_EXPIRY_S,
                ),
                follow_redirects=True,
            )
        return client

    async def aclose(self) -> None:
        """Close the HTTP client and its connection pool."""
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()
        await super().aclose()

    # ------------------------------------------------------------- translate

    def _body(self, request: Request, *, stream: bool) -> bytes:
        params = self._params(request)  # the SDK path's mapping, endpoint rows applied
        del params["timeout"]  # a client option, not a body field
        if stream:
            params["stream"] = True
            if self._stream_usage:
                params["stream_options"] = {"include_usage": True}
        body = {k: params.pop(k) for k in _SDK_ORDER if k in params}
        body.update(params)
        return _ENCODER.encode(body).encode()

    async def _complete(self, request: Request) -> Reply:
        client = self._get_http()
        resp = await client.post(self._url, content=self._body(request, stream=False), timeout=request.timeout_s)
        if not resp.is_success:
            raise _status_error(resp)
        data = json.loads(resp.content)
        try:
            choice = data["choices"][0]
            message = choice["message"]
            text, finish, refusal = message.get("content"), choice.get("finish_reason"), message.get("refusal")
            usage = data.get("usage")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            if isinstance(data, Mapping) and not data.get("choices"):
                raise self._error(ServerError, "the response holds no choices") from None
            raise self._error(ServerError, f"malformed response: {type(exc).__name__}: {exc}") from None
        if text is not None and not isinstance(text, str):
            raise self._error(ServerError, f"malformed response: message content is {type(text).__name__}")
        if finish == "content_filter":
            raise self._error(ContentFiltered, "the answer was withheld by the vendor's content filter")
        if refusal and not text:
            raise self._error(ContentFiltered, f"the model refused: {refusal}")
        return Reply(text or "", _usage(finish, usage))

    async def _stream(self, request: Request) -> AsyncIterator[str | Usage]:
        client = self._get_http()
        finish: str | None = None
        usage: Any = None
        async with client.stream(
            "POST", self._url, content=self._body(request, stream=True), timeout=request.timeout_s
        ) as resp:
            if not resp.is_success:
                await resp.aread()
                raise _status_error(resp)
            decoder = _SSEDecoder()
            chunks = resp.aiter_bytes()
            done = False
            async for raw in chunks:
                for data in decoder.feed(raw):
                    if data.startswith("[DONE]"):
                        done = True
                        break
                    text, chunk_finish, chunk_usage = self._read_chunk(data)
                    if chunk_usage is not None:
                        usage = chunk_usage
                    if text:
                        yield text
                    if chunk_finish:
                        finish = chunk_finish
                if done:
                    await _drain(chunks)
                    break
        if finish is None:
            raise self._error(ServerError, "stream ended without a finish_reason")
        if finish == "content_filter":
            raise self._error(ContentFiltered, "the answer was withheld by the vendor's content filter")
        yield _usage(finish, usage)

    def _read_chunk(self, data: str) -> tuple[str, str | None, Any]:
        """(text, finish_reason, usage) of one chunk, choice 0 only; an error event raises."""
        chunk = json.loads(data)
        if not isinstance(chunk, Mapping):
            raise self._error(ServerError, f"malformed stream event: {data[:200]}")
        if chunk.get("error"):
            raise self._stream_error(chunk["error"])
        text, finish = "", None
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, Mapping) else None
            if isinstance(content, str):
                text += content
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                finish = reason
        return text, finish, chunk.get("usage")

    def _stream_error(self, error: Any) -> ProviderError:
        # what the SDK raises as APIError for an error event inside a 200 stream, mapped as the SDK path maps it
        body = error if isinstance(error, Mapping) else {}
        message = body.get("message")
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        return self._error(self._refine(body, message) or ServerError, message)

    def _translate_error(self, exc: Exception) -> ProviderError | None:
        if isinstance(exc, UnicodeDecodeError):
            return self._error(ServerError, f"malformed body from the vendor (not UTF-8): {exc}")
        if not isinstance(exc, httpx.HTTPStatusError):
            return None  # transport errors, timeouts and malformed JSON: the base maps them as for the SDK
        resp = exc.response
        status = resp.status_code
        # what the SDK's `_make_status_error_from_response` reads from the body, so that messages match
        try:
            body = json.loads(resp.text)
        except ValueError:
            body = None
        error = body.get("error", body) if isinstance(body, Mapping) else None
        fields: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
        raw = fields.get("message")
        message = str(raw) if raw else f"Error code: {status}"
        cls = class_for_status(status)
        if cls is BadRequest:
            cls = self._refine(fields, message) or cls
        return self._error(cls, message, status=status, retry_after=parse_retry_after(resp.headers))


class OpenAIHTTPAdapter(_ChatCompletionsOverHTTP):
    """`OpenAIAdapter` (same arguments and behaviour) speaking to the API through plain httpx."""


class OpenAICompatibleHTTPAdapter(_ChatCompletionsOverHTTP, OpenAICompatibleAdapter):
    """`OpenAICompatibleAdapter` (same arguments, endpoint rows included) through plain httpx."""


def _status_error(resp: httpx.Response) -> httpx.HTTPStatusError:
    # the body stays on .response for `_translate_error`; the message quotes none of it (it may echo the key)
    return httpx.HTTPStatusError(
        f"HTTP {resp.status_code} from {resp.request.method} {resp.request.url}", request=resp.request, response=resp
    )


def _usage(finish: Any, usage: Any) -> Usage:
    reason = _FINISH.get(finish if isinstance(finish, str) else "", "other")
    if not isinstance(usage, Mapping):
        return Usage(reason, None, None)
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(
        reason,
        prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else None,
        completion if isinstance(completion, int) and not isinstance(completion, bool) else None,
    )


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE] (the body's end) for a little while: a finished body keeps its connection."""

    async def rest() -> None:
        async for _ in chunks:
            pass

    try:
        await asyncio.wait_for(rest(), _DRAIN_S)
    except (asyncio.TimeoutError, httpx.HTTPError):
        pass  # closing the response drops the connection instead; the completion is whole either way


class _SSEDecoder:
    """Server-sent events to their `data` payloads, as the SDK's decoder reads them.

    Lines end at CR, LF or CRLF only (`str.splitlines` would also split a JSON string holding
    U+2028). An event is dispatched at a blank line; events without data (a bare `event:` line)
    are skipped where the SDK would fail to parse their empty data.
    """

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        buf = self._buf + chunk
        trailing_cr = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # may be the first half of a CRLF split across reads
                buf, trailing_cr = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop() + trailing_cr
        events: list[str] = []
        for raw in lines:
            if not raw:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if raw.startswith(b"data:"):
                value = raw[5:].decode("utf-8")
                self._data.append(value[1:] if value.startswith(" ") else value)
            # other fields (event, id, retry) and comments carry nothing Chat Completions needs
        return events
