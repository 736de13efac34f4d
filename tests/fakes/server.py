"""Running the fake vendors: in a background thread (tests) or as a process (benchmarks).

    with FakeVendorServer() as fake:                 # thread, ephemeral port on 127.0.0.1
        fake.script("openai", Fault("rate_limit"))
        client = AsyncOpenAI(base_url=fake.openai_url, api_key="sk-test", max_retries=0)

    with spawn_fake(latency_ms=0) as remote:          # `python -m tests.fakes` in a subprocess
        remote.script("anthropic", "overloaded")      # over the control endpoints
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from tests.fakes.app import FakeApp
from tests.fakes.faults import FakeState, Fault, RecordedRequest

__all__ = ["FakeVendorServer", "RemoteFake", "serve", "spawn_fake"]

_REPO = Path(__file__).resolve().parents[2]


def _config(app: FakeApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="httptools",
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="critical",  # dropped connections are deliberate; uvicorn would log them as errors
        access_log=False,
        timeout_keep_alive=60,
        timeout_graceful_shutdown=1,
        server_header=False,
        date_header=False,
    )


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Urls:
    url: str

    @property
    def openai_url(self) -> str:
        """base_url for the OpenAI SDK (includes /v1)."""
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        """base_url for the Anthropic SDK."""
        return self.url

    @property
    def gemini_url(self) -> str:
        """base_url for google-genai's HttpOptions."""
        return self.url

    def channel_url(self, channel: str, vendor: str = "openai") -> str:
        """base_url of a separate channel (its own fault queue and counters) for `vendor`'s SDK."""
        base = f"{self.url}/{channel}"
        return base + "/v1" if vendor in ("openai", "openai_compatible") else base


class FakeVendorServer(_Urls):
    """The fake vendors on 127.0.0.1, served by uvicorn from a background thread.

    Args:
        port: 0 picks a free port.
        latency_ms: Fixed delay before each answer.
        context_window: Inputs estimated above it get the vendor's context-length error.
        record: Keep received requests for assertions.
    """

    def __init__(
        self, *, port: int = 0, latency_ms: float = 0.0, context_window: int | None = None, record: bool = True
    ) -> None:
        self.state = FakeState(latency_ms=latency_ms, context_window=context_window, record=record)
        self._defaults = (latency_ms, context_window)
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> FakeVendorServer:
        """Start serving; returns once the port accepts connections."""
        sock = _bind("127.0.0.1", self._port)
        port = sock.getsockname()[1]
        server = uvicorn.Server(_config(FakeApp(self.state)))
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name=f"fake-vendors-{port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake vendor server did not start")
            time.sleep(0.002)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (stalled answers are abandoned)."""
        if self._server is None or self._thread is None:
            return
        self.state.stopping = True
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeVendorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- scripting and assertions (thread-safe; see FakeState)

    def script(self, channel: str, *faults: Fault | str) -> None:
        """Queue faults for the next requests of `channel` ("openai", "anthropic", "gemini" or a prefix)."""
        self.state.script(channel, *faults)

    def set_mode(self, channel: str, fault: Fault | str | None) -> None:
        """Fail every request of `channel` with `fault` until cleared with None."""
        self.state.set_mode(channel, fault)

    def configure(self, *, latency_ms: float | None = None, context_window: int | None = None,
                  models: Iterable[str] | None = None) -> None:
        """Change the fixed latency, the context window and/or the model ids the fake knows."""
        if models is not None:
            self.state.models = frozenset(models)
        if latency_ms is not None:
            self.state.latency_ms = latency_ms
        if context_window is not None:
            self.state.context_window = context_window

    def reset(self) -> None:
        """Forget faults and records; restore the constructor's latency and context window."""
        self.state.reset()
        self.state.latency_ms, self.state.context_window = self._defaults

    def calls(self, channel: str | None = None) -> int:
        """Requests received by `channel` (or in total)."""
        return self.state.calls(channel)

    def requests(self, channel: str | None = None) -> list[RecordedRequest]:
        """Requests received by `channel` (or all)."""
        return self.state.requests(channel)

    def last_body(self, channel: str) -> Any:
        """JSON body of the last request of `channel`."""
        reqs = self.state.requests(channel)
        if not reqs:
            raise AssertionError(f"the fake received no request on channel {channel!r}")
        return reqs[-1].body


class RemoteFake(_Urls):
    """Control client of a fake vendor server running in another process."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def script(self, channel: str, *faults: Fault | str) -> None:
        """Queue faults for the next requests of `channel`."""
        items = [f.to_json() if isinstance(f, Fault) else f for f in faults]
        self._call("/_fake/script", {"channel": channel, "faults": items})

    def set_mode(self, channel: str, fault: Fault | str | None) -> None:
        """Fail every request of `channel` with `fault` until cleared with None."""
        self._call("/_fake/mode", {"channel": channel, "fault": fault.to_json() if isinstance(fault, Fault) else fault})

    def configure(self, **settings: Any) -> None:
        """Set latency_ms, context_window and/or record."""
        self._call("/_fake/config", settings)

    def reset(self) -> None:
        """Forget faults and records."""
        self._call("/_fake/reset", {})

    def stats(self) -> dict[str, Any]:
        """Calls and pending faults per channel."""
        return self._call("/_fake/stats")

    def calls(self, channel: str | None = None) -> int:
        """Requests received by `channel` (or in total)."""
        counts: dict[str, int] = self.stats()["calls"]
        return counts.get(channel, 0) if channel is not None else sum(counts.values())


def serve(port: int = 0, latency_ms: float = 0.0, context_window: int | None = None, record: bool = False) -> None:
    """Serve in the foreground (the `python -m tests.fakes` entry); prints the URL once listening."""
    sock = _bind("127.0.0.1", port)
    state = FakeState(latency_ms=latency_ms, context_window=context_window, record=record)
    server = uvicorn.Server(_config(FakeApp(state)))

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.001)
        print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await task

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


@contextlib.contextmanager
def spawn_fake(latency_ms: float = 0.0, context_window: int | None = None) -> Iterator[RemoteFake]:
    """Run the fake vendors in a subprocess for the duration of the block."""
    cmd = [sys.executable, "-m", "tests.fakes", "--port", "0", "--latency-ms", f"{latency_ms:g}"]
    if context_window is not None:
        cmd += ["--context-window", str(context_window)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, cwd=_REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"the fake vendor process did not start (printed {line!r})")
        yield RemoteFake(line)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
