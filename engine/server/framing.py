"""How `engine serve` puts responses on the wire: uvicorn's httptools protocol, one write per response.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, then the body with a second write: two `send` system calls and two
wake-ups of the client for what is one small JSON answer (or a stream's head and its first
chunk). On loopback a write costs as much as a few hundred lines of Python, so the head is held
back and goes out with the first body bytes, in the same write. A head whose body does not follow
in the same turn of the event loop (a 204, a HEAD answer, a stream whose first chunk is late)
is written on the next turn: nothing waits longer than that, and the bytes keep their order.

    uvicorn.Config(app, http="engine.server.framing:HttpToolsProtocol")
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _UvicornHttpTools

__all__ = ["HttpToolsProtocol"]

_HEAD = b"HTTP/1.1 "  # how uvicorn's status lines start (a 100 Continue too)
_JOIN_UP_TO = 1 << 16  # a body up to this size is copied behind the head; a larger one is not


class _HeadHeld:
    """The connection's transport as uvicorn's protocol sees it: a response head is held until
    the next write (its body) or the next turn of the loop, whichever comes first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _JOIN_UP_TO:
                self._transport.write(held + data)
            else:  # one writev, without copying a large body
                self._transport.writelines((held, data))
        elif type(data) is bytes and data.startswith(_HEAD):
            self._held = data
            self._loop.call_soon(self._release)
        else:
            self._transport.write(data)

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        self._release()
        self._transport.writelines(lines)

    def _release(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._release()
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        # the rest of the transport interface (flow control, abort...) as it is
        return getattr(self._transport, name)


class HttpToolsProtocol(_UvicornHttpTools):
    """uvicorn's httptools HTTP/1.1 protocol, writing each response's head with its first body bytes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _HeadHeld(transport, self.loop)  # type: ignore[assignment]
