"""Streams through `engine serve` when the client leaves early, against an upstream that keeps streaming."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from engine.server.config import ServeConfig
from tests.test_serve_support import ServerThread

_ROLE = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
_TEXT = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'


class SlowUpstream:
    """An OpenAI-compatible upstream (aiohttp, its own thread) whose streams send their first
    chunks, then hold the connection open; `left` is set once the router hangs up on one."""

    def __init__(self) -> None:
        self.url = ""
        self.left = threading.Event()
        self.streams = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        self.streams += 1
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_ROLE + _TEXT)
        try:
            for _ in range(300):  # 30 s: far longer than the test waits
                await asyncio.sleep(0.1)
                if request.transport is None or request.transport.is_closing():
                    break
        finally:
            self.left.set()
        return resp

    def __enter__(self) -> SlowUpstream:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._runner = web.ServerRunner(web.Server(self.handle), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{host}:{port}/v1"
            ready.set()
            while True:
                await asyncio.sleep(3600)

        threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
        assert ready.wait(10), "the upstream did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)


@pytest.fixture
def upstream() -> Iterator[SlowUpstream]:
    with SlowUpstream() as up:
        yield up


def _until(check: object, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.02)
    return False


def test_a_client_that_leaves_mid_stream_hangs_up_on_the_vendor_and_frees_the_request(
        upstream: SlowUpstream, tmp_path: Path) -> None:
    db = tmp_path / "decisions.db"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""version: 1
providers:
  up: {{adapter: openai, api_key: sk-test-0123456789abcdef, base_url: '{upstream.url}', timeout_s: 30}}
models:
  gpt-mini: {{provider: up, id: gpt-4o-mini, price: {{input: 0.15, output: 0.6}}, context_window: 128000}}
routes:
  - {{name: default, strategy: ordered}}
log: {{sqlite: '{db}'}}
""")
    body = json.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hello"}]}).encode()
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            conn.settimeout(10)
            got = b""
            while b'"content":"Hel"' not in got:
                chunk = conn.recv(65536)
                assert chunk, got
                got += chunk
            assert got.startswith(b"HTTP/1.1 200") and b"text/event-stream" in got
            live = s.service.holder.live
            assert live is not None and live.inflight == 1
        # the client is gone: the router closes the vendor's stream and the request lets go of the policy
        assert upstream.left.wait(10), "the vendor stream was left open after the client went away"
        assert _until(lambda: live.inflight == 0)
        s.call(live.router.recorder.log.aflush())  # type: ignore[union-attr]
    assert upstream.streams == 1
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*) from requests").fetchone() == (0,)  # an abandoned stream settles nothing
