"""engine serve's HTTP framing (engine/server/framing.py): a response's head goes out with its body."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from engine.server.framing import HttpToolsProtocol, _HeadHeld
from tests.test_serve_support import HTTP_PROTOCOL


class _Recorder(asyncio.Transport):
    """A transport that keeps what it is asked to write, one entry per write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        self.writes.append(b"".join(bytes(x) for x in lines))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_head_and_body_are_one_write() -> None:
    raw = _Recorder()
    t = _HeadHeld(raw, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.writes == []
    t.write(b"{}")
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)  # the scheduled release finds nothing left to write
    assert len(raw.writes) == 1


async def test_large_body_follows_its_head_in_order() -> None:
    raw = _Recorder()
    t = _HeadHeld(raw, asyncio.get_running_loop())
    body = b"x" * (1 << 17)
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(body)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n" + body]


async def test_a_head_without_body_goes_out_on_the_next_turn() -> None:
    raw = _Recorder()
    t = _HeadHeld(raw, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")  # the next response of the connection
    t.close()  # closing writes what is held first
    assert raw.writes[-1] == b"HTTP/1.1 200 OK\r\n\r\n" and raw.closed


async def test_nothing_is_written_to_a_closing_transport() -> None:
    raw = _Recorder()
    t = _HeadHeld(raw, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    raw.closed = True  # the client went away
    await asyncio.sleep(0)
    assert raw.writes == [] and t.is_closing()


async def test_other_writes_pass_straight_through() -> None:
    raw = _Recorder()
    t = _HeadHeld(raw, asyncio.get_running_loop())
    t.write(b"5\r\nhello\r\n")
    t.writelines([b"0\r\n", b"\r\n"])
    assert raw.writes == [b"5\r\nhello\r\n", b"0\r\n\r\n"]
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)


# -- over a real socket, with uvicorn --------------------------------------------------------


_release = threading.Event()


async def _json(request: Request) -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


async def _empty(request: Request) -> Response:
    return Response(status_code=204)


async def _late_stream(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        while not _release.is_set():  # the head must reach the client before this chunk exists
            await asyncio.sleep(0.01)
        yield b"data: 1\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def url() -> Iterator[tuple[str, int]]:
    app = Starlette(routes=[Route("/json", _json, methods=["GET", "POST"]), Route("/empty", _empty),
                            Route("/late", _late_stream)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, http=HTTP_PROTOCOL, loop="uvloop", ws="none", lifespan="off",
                                           log_config=None, log_level="critical", access_log=False))
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield sock.getsockname()[:2]
    server.should_exit = True
    thread.join(timeout=10)


def _read_until(conn: socket.socket, needle: bytes, have: bytes = b"", count: int = 1) -> bytes:
    conn.settimeout(5)
    while have.count(needle) < count:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed; got {have!r}"
        have += chunk
    return have


def test_uvicorn_runs_this_protocol() -> None:
    config = uvicorn.Config(Starlette(), http=HTTP_PROTOCOL)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol


def test_pipelined_requests_get_whole_answers_in_order(url: tuple[str, int]) -> None:
    with socket.create_connection(url) as conn:
        req = b"GET /json HTTP/1.1\r\nhost: x\r\n\r\n"
        conn.sendall(req + b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n" + req)
        got = _read_until(conn, b'{"ok":true}', count=2)
    assert got.count(b"HTTP/1.1 ") == 3
    first, second, third = got.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 OK") and first.endswith(b'{"ok":true}')
    assert second.startswith(b"204 No Content")
    assert third.startswith(b"200 OK") and third.endswith(b'{"ok":true}')


def test_a_head_request_gets_its_head(url: tuple[str, int]) -> None:
    with socket.create_connection(url) as conn:
        conn.sendall(b"HEAD /empty HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _read_until(conn, b"\r\n\r\n").startswith(b"HTTP/1.1 204")


def test_a_streams_head_does_not_wait_for_its_first_chunk(url: tuple[str, int]) -> None:
    _release.clear()
    with socket.create_connection(url) as conn:
        conn.sendall(b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n")
        head = _read_until(conn, b"\r\n\r\n")  # times out if the head were held for the body
        assert head.startswith(b"HTTP/1.1 200") and b"data: 1" not in head
        _release.set()
        assert b"data: 1" in _read_until(conn, b"data: 1", head)
