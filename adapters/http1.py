"""A lean keep-alive HTTP/1.1 client for one origin: asyncio protocols and httptools' parser.

The http transport's calls (`adapters.openai_http`) spend most of their client time in aiohttp's
per-request machinery (request and response objects, payload registry, timers, stream readers):
~0.1 ms of CPU a call, a third of what the whole `engine serve` worker spends on a request. This
client does the one thing that path needs, a POST of a prebuilt body to one URL, in one write,
with the answer parsed in C; aiohttp stays for everything it does not do (proxies, redirects).

Its failures are aiohttp's exception classes, so that the adapter maps them (and keeps them as
`__cause__`) exactly as it maps aiohttp's: a refused or unresolvable connection is a
`ClientConnectorError` (DNS, SSL and certificate variants), a connection closed before the answer's
head `ServerDisconnectedError`, one closed inside the body `ClientPayloadError`, a malformed answer
`ClientResponseError`; a call past its total timeout `TimeoutError`, a stream's connect and read
phases `ConnectionTimeoutError` and `SocketTimeoutError`.

Connections are kept (most recently used first) while the server keeps them alive, up to
`keepalive_s` idle, at most `limit` at once (a caller past it waits for one to be released).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, NamedTuple, cast

import aiohttp
import httptools

__all__ = ["CONNECT_TIMEOUT", "SOCKET_TIMEOUT", "Answer", "Origin", "OriginConnection"]

_REDIRECTS = frozenset((301, 302, 303, 307, 308))  # what aiohttp follows (it keeps handling those)
SOCKET_TIMEOUT = getattr(aiohttp, "SocketTimeoutError", aiohttp.ServerTimeoutError)
CONNECT_TIMEOUT = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError)


def _is_redirect(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    return status in _REDIRECTS and any(k.lower() == b"location" for k, _ in headers)


class _Key(NamedTuple):
    # what aiohttp's connector errors read from their connection key (its own type varies by version)
    host: str
    port: int
    is_ssl: bool
    ssl: ssl.SSLContext | bool


class Answer:
    """A whole answer: status, reason, headers (raw, in order) and body."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def redirect(self) -> bool:
        """A redirect aiohttp would follow (the caller re-sends the request through aiohttp)."""
        return _is_redirect(self.status, self.headers)


class OriginConnection(asyncio.Protocol):
    """One connection to the origin; one exchange at a time, answers parsed as they arrive."""

    def __init__(self, origin: Origin) -> None:
        self._origin = origin
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.head_done = False
        self.complete = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(aiohttp.ClientResponseError(self._origin.request_info, (), status=400,
                                                   message=f"malformed answer: {e}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self._error is not None:
            return
        if self.head_done and not self._framed():  # a body that lasts until the connection closes
            self.complete = True
            self._wake()
        elif self.head_done:
            self._fail(aiohttp.ClientPayloadError("Response payload is not completed"))
        else:
            self._fail(aiohttp.ServerDisconnectedError())

    # ------------------------------------------------------- parser callbacks

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self.reason, self.headers = b"", []
            return
        self.status = status
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim answer
        self._keep_alive = self._parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -------------------------------------------------------------- internals

    def _framed(self) -> bool:
        for name, value in self.headers:
            low = name.lower()
            if low == b"content-length" or (low == b"transfer-encoding" and b"chunked" in value.lower()):
                return True
        return False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _expire(self, exc: BaseException) -> None:
        self._fail(exc)
        self._close()

    async def _wait(self, timeout: float, exc: type[BaseException]) -> None:
        """Until the parser has something new (or the connection failed), at most `timeout`."""
        if self._error is not None:
            raise self._error
        if timeout <= 0:
            self._expire(exc())
            raise exc()
        loop = self._origin.loop
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._expire, exc())
        try:
            await waiter
        finally:
            self._waiter = None
            timer.cancel()

    # -------------------------------------------------------------- exchanges

    def send(self, body: bytes) -> None:
        """Write the request (the origin's head, the length, the body) in one write."""
        self._reset()
        if self.closed or self.transport is None:
            raise aiohttp.ServerDisconnectedError()
        self.transport.write(self._origin.head + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def head(self, timeout: float) -> None:
        """Wait for the answer's status and headers (a read phase of at most `timeout`)."""
        while not self.head_done:
            await self._wait(timeout, SOCKET_TIMEOUT)

    async def body(self, deadline: float, exc: type[BaseException] = TimeoutError) -> bytes:
        """The rest of the body, by `deadline` (loop time)."""
        loop = self._origin.loop
        while not self.complete:
            await self._wait(deadline - loop.time(), exc)
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data

    async def iter_body(self, read_timeout: float) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; each wait at most `read_timeout`."""
        while True:
            chunks = self.chunks
            while chunks:
                yield chunks.popleft()
            if self.complete:
                return
            await self._wait(read_timeout, SOCKET_TIMEOUT)

    async def finish(self, seconds: float) -> None:
        """Read the body's end for at most `seconds` (a finished body keeps its connection)."""
        try:
            await self.body(self._origin.loop.time() + seconds)
        except (TimeoutError, asyncio.TimeoutError, aiohttp.ClientError):
            pass

    def answer(self, body: bytes) -> Answer:
        """The whole answer, once its body is read."""
        return Answer(self.status, self.reason.decode("latin-1"), self.headers, body)

    @property
    def redirect(self) -> bool:
        """The head is a redirect aiohttp would follow."""
        return _is_redirect(self.status, self.headers)

    @property
    def reusable(self) -> bool:
        """Whole answer read, the server keeps the connection, nothing failed."""
        return self.complete and self._keep_alive and self._error is None and not self.closed


class Origin:
    """Keep-alive connections to one `host:port` (TLS with `ssl_context`), for POSTs to one path.

    Args:
        host, port: where to connect.
        path: the request target (path and query).
        headers: the request headers but Host and Content-Length, in order (values without CR/LF).
        ssl_context: for https; None for plain TCP.
        request_info: what failures quote as the request (aiohttp's `RequestInfo`, headers redacted
            by the caller).
        keepalive_s: how long an idle connection is kept.
        limit: at most this many connections at once.
    """

    def __init__(self, host: str, port: int, path: str, headers: list[tuple[str, str]], *,
                 ssl_context: ssl.SSLContext | None, request_info: aiohttp.RequestInfo, keepalive_s: float,
                 limit: int) -> None:
        default_port = 443 if ssl_context is not None else 80
        authority = f"[{host}]" if ":" in host else host
        if port != default_port:
            authority += f":{port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {authority}", *(f"{k}: {v}" for k, v in headers)]
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("utf-8")
        self.host, self.port, self.ssl = host, port, ssl_context
        self.request_info = request_info
        self.keepalive_s = keepalive_s
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self._idle: list[OriginConnection] = []
        self._closed = False
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._key = _Key(host, port, ssl_context is not None, ssl_context or True)

    async def connect(self, timeout: float, exc: type[BaseException] = TimeoutError) -> OriginConnection:
        """An idle connection, else a new one within `timeout` (then `exc`)."""
        now = self.loop.time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            self._discard(conn)
        while self._open >= self.limit:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            await waiter
            if idle:
                return await self.connect(timeout, exc)
        self._open += 1
        try:
            _, conn = await asyncio.wait_for(self.loop.create_connection(
                lambda: OriginConnection(self), self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl is not None else None), timeout)
        except asyncio.TimeoutError:
            self._gone()
            raise exc() from None
        except ssl.CertificateError as e:
            self._gone()
            raise aiohttp.ClientConnectorCertificateError(self._key, e) from e  # type: ignore[arg-type]
        except ssl.SSLError as e:
            self._gone()
            raise aiohttp.ClientConnectorSSLError(self._key, e) from e
        except socket.gaierror as e:
            self._gone()
            raise aiohttp.ClientConnectorDNSError(self._key, e) from e  # type: ignore[arg-type]
        except OSError as e:
            self._gone()
            raise aiohttp.ClientConnectorError(self._key, e) from e  # type: ignore[arg-type]
        except BaseException:
            self._gone()
            raise
        return conn

    def release(self, conn: OriginConnection) -> None:
        """Give a connection back: kept when its answer was read whole and the server keeps it, else closed."""
        if conn.reusable and not self._closed:
            conn.idle_since = self.loop.time()
            self._idle.append(conn)
            self._wake_one()
        else:
            conn._close()
            self._discard(conn)

    def _discard(self, conn: OriginConnection) -> None:
        conn._close()
        self._gone()

    def _gone(self) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def call(self, body: bytes, timeout: float) -> Answer:
        """POST `body` and read the whole answer, all within `timeout` seconds."""
        deadline = self.loop.time() + timeout
        conn = await self.connect(timeout)
        try:
            conn.send(body)
            data = await conn.body(deadline)
            return conn.answer(data)
        finally:
            self.release(conn)

    def close(self) -> None:
        """Close the idle connections (those in use close when released)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)

    def describe(self) -> dict[str, Any]:
        """Connections open and idle (for tests and debugging)."""
        return {"open": self._open, "idle": len(self._idle)}
