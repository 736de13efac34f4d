"""Helpers of the `engine serve` tests: a server in a thread or a process, and fake-backed policies.

(Named test_serve_* so it lives beside the tests it serves; it defines no tests itself.)
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from engine.server.app import Service, create_app
from engine.server.config import ServeConfig
from tests.fakes.clients import TEST_KEYS
from tests.fakes.server import FakeVendorServer

# what `engine serve` runs uvicorn with (its framing: a response's head and body in one write)
HTTP_PROTOCOL = "engine.server.framing:HttpToolsProtocol"

REPO = Path(__file__).resolve().parents[1]


def fake_policy(fake: FakeVendorServer, *, extra: str = "", log: str | None = None,
                routes: str | None = None) -> str:
    """A policy whose two providers are the fake OpenAI and Anthropic servers."""
    default_routes = """
routes:
  - name: default
    strategy: ordered
    candidates: [gpt-mini, claude]
"""
    log_section = f"log: {{sqlite: '{log}', prompts: hash}}\n" if log else ""
    return f"""version: 1
providers:
  openai:
    adapter: openai
    api_key: {TEST_KEYS['openai']}
    base_url: {fake.openai_url}
    timeout_s: 5
  anthropic:
    adapter: anthropic
    api_key: {TEST_KEYS['anthropic']}
    base_url: {fake.anthropic_url}
    timeout_s: 5
models:
  gpt-mini:
    provider: openai
    id: gpt-4o-mini
    price: {{input: 0.15, output: 0.60}}
    context_window: 128000
    scores: {{chat: 4}}
  claude:
    provider: anthropic
    id: claude-haiku-4-5
    price: {{input: 1.0, output: 5.0}}
    context_window: 200000
    scores: {{chat: 4}}
{routes if routes is not None else default_routes}
retry: {{max_attempts: 1, backoff_ms: 1, max_backoff_ms: 5}}
deadline_s: 20
health: {{min_requests: 1000}}
{log_section}{extra}
"""


def write_policy(path: Path, text: str) -> Path:
    """Replace `path` atomically, with a new mtime even on coarse-clock file systems."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    st = path.stat() if path.exists() else None
    os.replace(tmp, path)
    if st is not None:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    return path


class ServerThread:
    """`create_app(config)` on uvicorn in a background thread, on a free port of 127.0.0.1."""

    def __init__(self, config: ServeConfig, **app_kwargs: Any) -> None:
        self.config = config
        self.app: Starlette = create_app(config, **app_kwargs)
        self.service: Service = self.app.state.service
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> ServerThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        server = uvicorn.Server(uvicorn.Config(self.app, http=HTTP_PROTOCOL, ws="none", lifespan="on",
                                               log_config=None, log_level="critical", access_log=False,
                                               timeout_graceful_shutdown=5))
        self._server = server

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.005)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=20)

    def call(self, coro: Any, timeout: float = 20) -> Any:
        """Run a coroutine on the server's loop (to reach its state safely) and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class ServeProcess:
    """`engine serve ...` in a subprocess; `url` is parsed from its first line."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self._reader: threading.Thread | None = None
        self._started = threading.Event()

    def __enter__(self) -> ServeProcess:
        cmd = [sys.executable, "-c", "from engine.cli import main; main()", "serve", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._started.wait(30):
            self.__exit__()
            raise RuntimeError("engine serve did not start:\n" + "".join(self.output))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
            if "Application startup complete" in line or "Started parent process" in line:
                self._started.set()

    def wait_for_output(self, needle: str, timeout: float = 20) -> bool:
        """Whether `needle` appears in the output within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.output):
                return True
            time.sleep(0.05)
        return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def fake_server() -> Iterator[FakeVendorServer]:
    """A fake vendor server for one module."""
    with FakeVendorServer() as server:
        yield server
