"""OpenAI Chat Completions over a lean HTTP/1.1 client, else aiohttp: the lean transport of the service path.

The SDK adapters (`adapters.openai`, `adapters.openai_compat`) stay the reference behaviour;
these subclasses keep everything they decide (request mapping, endpoint rows, key handling,
refinement of error bodies) and replace only the wire. The SDK's httpx client and pydantic
parsing cost ~2 ms CPU a call; httpx alone still ~1.1-1.5 ms at 32 concurrent calls (its
connection pool); aiohttp ~0.2-0.3 ms, which is what lets one `engine serve` worker beat Portkey.
Requests go through `adapters.http1` (keep-alive connections, httptools' parser, one write per
request: a third of aiohttp's CPU per call) unless the URL needs aiohttp: a proxy, credentials in
the URL, a path or header it would encode; a URL that answers with a redirect is handed to aiohttp
for good (that request is sent again through it, which follows redirects as the SDK does).

Parity with the SDK path, which the contract tests assert over every fault:

- the same JSON body, byte for byte (same fields, key order and separators);
- the same error classes, statuses and `retry_after` (status first, then the body's
  context-length / content-filter codes), and the same message wherever the vendor gave one;
  aiohttp's own exceptions are kept as `__cause__` (a status error as `ClientResponseError`).
- the same reach: `HTTP(S)_PROXY` / `NO_PROXY` and `SSL_CERT_FILE` / `SSL_CERT_DIR` (else
  certifi's CAs) as httpx honours them for the SDK, resolved once per session.

Timeouts: a call's `timeout_s` bounds a whole non-streaming call (`total`); a stream is bounded
per phase (connect, then each read), as httpx bounds the SDK's, so that a long answer that keeps
flowing is not cut.

The default transport of the `openai` and `openai_compatible` kinds (`transport: http`, see
`adapters.registry`); `transport: sdk` selects the SDK adapters. Both build the body and read the
answers with the same pure functions (`adapters.openai_wire`); only the wire differs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from adapters.base import Reply, Request, ToolCallDelta, Usage
from adapters.errors import (
    BadRequest,
    ProviderError,
    ServerError,
    Timeout,
    class_for_status,
    parse_retry_after,
)
from adapters.openai import DRAIN_S, OpenAIAdapter
from adapters.openai_compat import OpenAICompatibleAdapter

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from adapters.http1 import Origin, OriginConnection

__all__ = ["OpenAICompatibleHTTPAdapter", "OpenAIHTTPAdapter"]

_PIP = "pip install 'aiohttp>=3.9'"
# The SDK's own serialisation (`openai._utils._json.openapi_dumps`): compact, UTF-8, no NaN.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# Up to 1000 connections as the SDK; aiohttp keeps every idle one (under the service's concurrency
# each in-flight call has its own connection, and closing them churns TCP).
_MAX_CONNECTIONS = 1000
_KEEPALIVE_S = 5.0  # httpx's and the SDK's default; uvicorn-served upstreams (vLLM) close idle ones at 5 s
_DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _require_aiohttp() -> None:
    # find_spec does not import: a missing client is reported when the policy is loaded, cheaply
    if importlib.util.find_spec("aiohttp") is None:
        raise ImportError(f"the http transport needs aiohttp: {_PIP}")


class _ChatCompletionsOverHTTP(OpenAIAdapter):
    """The transport swap: `_complete`, `_stream`, the session and status errors; the rest is inherited."""

    sdk_modules = ("aiohttp",)
    keeps_deadline = True  # a whole non-streaming call is bounded by `total` (see the module docstring)

    _http: aiohttp.ClientSession | None = None
    """The shared session, created on first use inside the running loop (after the key is resolved)."""
    _url: str = ""
    """`{base_url}/chat/completions`, fixed with the session."""
    _proxy: str | None = None
    """The environment's proxy for `_url`, resolved with the session (aiohttp's `trust_env` would do it per call)."""
    _timeout: aiohttp.ClientTimeout | None = None
    """The last non-streaming call's timeout."""
    _lean: Origin | None = None
    """The lean client for `_url` (adapters.http1), made with the session unless a proxy or the URL needs aiohttp."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _require_aiohttp()

    # ---------------------------------------------------------------- client

    def _warm(self) -> None:
        self._get_http()

    def _get_http(self) -> aiohttp.ClientSession:
        session = self._http
        if session is None:
            import aiohttp

            key = self._resolve_key()
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
            self._proxy = _env_proxy(self._url)
            connector = aiohttp.TCPConnector(
                limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_S,
                ssl=_ssl_context() if self._url.startswith("https:") else True,
            )
            # trust_env stays off: it re-reads the environment and ~/.netrc on every call, and a netrc
            # entry for the host would replace the Authorization header
            session = self._http = aiohttp.ClientSession(headers=headers, connector=connector, trust_env=False)
            self._lean = _lean_origin(self._url, headers, self._proxy)
        return session

    async def aclose(self) -> None:
        """Close the HTTP session and its connections."""
        session, self._http = self._http, None
        lean, self._lean = self._lean, None
        if lean is not None:
            lean.close()
        if session is not None:
            await session.close()
        await super().aclose()

    # ------------------------------------------------------------- translate

    def _wire(self, request: Request, *, stream: bool) -> bytes:
        body, extra = self._body(request, stream=stream)  # the SDK path's mapping, endpoint rows applied
        if extra:
            body = {**body, **extra}  # as the SDK merges its extra_body
        return _ENCODER.encode(body).encode()

    def _total_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # a call's timeout is nearly always the provider's: the (immutable) object is made once
        cached = self._timeout
        if cached is None or cached.total != seconds:
            import aiohttp

            cached = self._timeout = aiohttp.ClientTimeout(total=seconds)
        return cached

    async def _complete(self, request: Request) -> Reply:
        session = self._get_http()
        data = self._wire(request, stream=False)
        timeout_s = request.timeout_s
        lean = self._lean
        if lean is not None:
            started = lean.loop.time()
            answer = await lean.call(data, timeout_s)
            if answer.redirect:
                self._give_up_lean()
                # the resend through aiohttp gets what is left of the call's timeout (keeps_deadline)
                timeout_s = max(timeout_s - (lean.loop.time() - started), 0.001)
            else:
                if not 200 <= answer.status < 300:
                    raise self._lean_status_error(lean, answer.status, answer.reason, answer.headers, answer.body)
                return self._answer(json.loads(answer.body))
        async with session.post(
            self._url, data=data, proxy=self._proxy, timeout=self._total_timeout(timeout_s),
        ) as resp:
            raw = await resp.read()
            if not 200 <= resp.status < 300:
                raise self._status_error(resp.status, resp.headers, raw) from self._aiohttp_error(resp)
        return self._answer(json.loads(raw))

    async def _stream(self, request: Request) -> AsyncIterator[str | ToolCallDelta | Usage]:
        session = self._get_http()
        data = self._wire(request, stream=True)
        lean = self._lean
        if lean is not None:
            conn = await self._lean_head(lean, data, request.timeout_s)
            if conn is None:
                self._give_up_lean()
            else:
                try:
                    async for item in self._events(conn.iter_body(request.timeout_s), lambda: conn.finish(DRAIN_S)):
                        yield item
                finally:
                    lean.release(conn)
                return
        import aiohttp

        timeout = aiohttp.ClientTimeout(connect=request.timeout_s, sock_read=request.timeout_s)
        async with session.post(self._url, data=data, proxy=self._proxy, timeout=timeout) as resp:
            if not 200 <= resp.status < 300:
                raise self._status_error(resp.status, resp.headers, await resp.read()) from self._aiohttp_error(resp)
            # whole reads fed to our decoder: aiohttp's line iterator splits at LF only, SSE also at CR
            content = resp.content
            async for item in self._events(content.iter_any(), lambda: _drain(content)):
                yield item

    def _give_up_lean(self) -> None:
        # the URL redirects: aiohttp follows redirects (as the SDK does), dropping the key on a
        # cross-origin hop; from now on it sends every request, this one again from the start
        lean, self._lean = self._lean, None
        if lean is not None:
            lean.close()

    async def _lean_head(self, lean: Origin, data: bytes, timeout_s: float) -> OriginConnection | None:
        """A stream's request sent and its head read on the lean client (connect, then read, each within
        `timeout_s`): the connection of a 2xx answer; None for a redirect (aiohttp follows it); else
        the status error is raised."""
        from adapters.http1 import CONNECT_TIMEOUT, SOCKET_TIMEOUT

        conn = await lean.connect(timeout_s, CONNECT_TIMEOUT)
        try:
            conn.send(data)
            await conn.head(timeout_s)
            if 200 <= conn.status < 300:
                return conn
            if conn.redirect:
                await conn.finish(DRAIN_S)
                return None
            raw = await conn.body(lean.loop.time() + timeout_s, SOCKET_TIMEOUT)
        except BaseException:
            lean.release(conn)
            raise
        lean.release(conn)
        raise self._lean_status_error(lean, conn.status, conn.reason.decode("latin-1"), conn.headers, raw)

    def _lean_status_error(self, lean: Origin, status: int, reason: str, raw_headers: list[tuple[bytes, bytes]],
                           body: bytes) -> ProviderError:
        """A non-2xx answer on the lean client: mapped as on aiohttp, with aiohttp's exception as its cause."""
        headers = _headers_of(raw_headers)
        error = self._status_error(status, headers, body)
        error.__cause__ = self._response_error(lean.request_info, (), status, reason, headers)
        return error

    def _status_error(self, status: int, headers: Mapping[str, str], raw: bytes) -> ProviderError:
        """A non-2xx answer mapped as the SDK path maps its `APIStatusError` (status first, then the body)."""
        # what the SDK's `_make_status_error_from_response` reads from the body, so that messages match
        try:
            body = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            body = None
        error = body.get("error", body) if isinstance(body, Mapping) else None
        fields: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
        message = str(fields["message"]) if fields.get("message") else f"Error code: {status}"
        cls = class_for_status(status)
        if cls is BadRequest:
            cls = self._refine(fields, message) or cls
        return self._error(cls, message, status=status, retry_after=parse_retry_after(headers))

    def _aiohttp_error(self, resp: aiohttp.ClientResponse) -> aiohttp.ClientResponseError:
        return self._response_error(resp.request_info, resp.history, resp.status, resp.reason or "", resp.headers)

    def _response_error(self, info: aiohttp.RequestInfo, history: tuple[aiohttp.ClientResponse, ...], status: int,
                        reason: str, headers: Mapping[str, str]) -> aiohttp.ClientResponseError:
        """aiohttp's own exception for a status error, kept as the cause; it quotes no body (which may echo the key)."""
        import aiohttp

        return aiohttp.ClientResponseError(self._redacted(info), history, status=status, message=reason,
                                           headers=headers)  # type: ignore[arg-type]

    def _redacted(self, info: aiohttp.RequestInfo) -> aiohttp.RequestInfo:
        # a RequestInfo carries the request's headers, Authorization included, into the exception's repr
        import aiohttp
        from multidict import CIMultiDict, CIMultiDictProxy

        from adapters.errors import scrub

        headers = CIMultiDictProxy(CIMultiDict((k, scrub(v, self._secrets)) for k, v in info.headers.items()))
        return aiohttp.RequestInfo(info.url, info.method, headers, info.real_url)

    def _translate_error(self, exc: Exception) -> ProviderError | None:
        if isinstance(exc, UnicodeDecodeError):
            return self._error(ServerError, f"malformed body from the vendor (not UTF-8): {exc}")
        import aiohttp  # only reached after the session exists: aiohttp is imported already

        if isinstance(exc, aiohttp.ClientResponseError):
            exc.request_info = self._redacted(exc.request_info)  # aiohttp's own (redirects): the base maps it
            return None
        # before ClientConnectionError: ServerTimeoutError is one; asyncio's differs from TimeoutError on 3.10
        if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError, TimeoutError)):
            return self._error(Timeout, f"no answer within the timeout: {type(exc).__name__}")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return self._error(ServerError, f"the answer was cut short: {type(exc).__name__}: {exc}")
        if isinstance(exc, aiohttp.ClientConnectionError):
            return self._connection_error(exc)
        # the SDK's errors (a probe uses the SDK client), else None: the base maps other client
        # errors and malformed JSON as for the SDK
        return super()._translate_error(exc)


class OpenAIHTTPAdapter(_ChatCompletionsOverHTTP):
    """`OpenAIAdapter` (same arguments and behaviour) speaking to the API through aiohttp."""


class OpenAICompatibleHTTPAdapter(_ChatCompletionsOverHTTP, OpenAICompatibleAdapter):
    """`OpenAICompatibleAdapter` (same arguments, endpoint rows included) through aiohttp."""


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read what follows [DONE] (the body's end) for a little while: a finished body keeps its connection."""
    import aiohttp

    if content.at_eof():
        return
    try:
        await asyncio.wait_for(content.read(), DRAIN_S)
    except (asyncio.TimeoutError, aiohttp.ClientError):
        pass  # releasing an unfinished response drops the connection instead; the completion is whole either way


def _lean_origin(url: str, headers: Mapping[str, str], proxy: str | None) -> Origin | None:
    """The lean client for `url`, or None where aiohttp has to do the work: a proxy, credentials in the
    URL, a path or header aiohttp would encode or refuse (it then reports the problem as it does today)."""
    import urllib.parse

    import aiohttp
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    from adapters.http1 import Origin

    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if (proxy or parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None
            or parts.password is not None or not _plain(target)
            or not all(_plain(k) and _plain(v, space=True) for k, v in headers.items())):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    # what aiohttp adds on its own, but Accept-Encoding: without it the body comes as it is, never compressed
    sent = {"Accept": "*/*", "User-Agent": aiohttp.http.SERVER_SOFTWARE, **headers}
    info = aiohttp.RequestInfo(URL(url), "POST", CIMultiDictProxy(CIMultiDict(sent)), URL(url))
    return Origin(parts.hostname, port, target, list(sent.items()),
                  ssl_context=_ssl_context() if parts.scheme == "https" else None, request_info=info,
                  keepalive_s=_KEEPALIVE_S, limit=_MAX_CONNECTIONS)


def _plain(text: str, *, space: bool = False) -> bool:
    """Printable ASCII (with spaces when `space`): sent as it is, as aiohttp would send it."""
    return text.isascii() and text.isprintable() and (space or " " not in text) and "\r" not in text


def _headers_of(raw: list[tuple[bytes, bytes]]) -> Mapping[str, str]:
    """An answer's headers as aiohttp gives them (case-insensitive, values decoded as it decodes them)."""
    from multidict import CIMultiDict, CIMultiDictProxy

    return CIMultiDictProxy(CIMultiDict((k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                                        for k, v in raw))


def _env_proxy(url: str) -> str | None:
    """The `HTTP(S)_PROXY` for `url` unless `NO_PROXY` exempts it: what httpx's `trust_env` gives the SDK."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _ssl_context() -> ssl.SSLContext:
    """The CAs httpx verifies the SDK's calls with: `SSL_CERT_FILE` / `SSL_CERT_DIR`, else certifi's bundle."""
    import ssl

    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    cafile = cafile if cafile and os.path.isfile(cafile) else None
    capath = capath if capath and os.path.isdir(capath) else None
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    import certifi  # httpx's dependency, so present wherever the SDK is

    return ssl.create_default_context(cafile=certifi.where())
