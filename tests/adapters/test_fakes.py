"""The fake vendor servers themselves: modes, channels, records, the separate process, the guard."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapters import Overloaded, ServerError
from tests.fakes import FakeVendorServer, Fault, spawn_fake
from tests.fakes.clients import adapter_for

REPO = Path(__file__).resolve().parents[2]


async def test_persistent_mode_until_cleared_and_queue_first(fake: FakeVendorServer) -> None:
    a = adapter_for("openai", fake)
    try:
        fake.set_mode("openai", "server_error")
        fake.script("openai", Fault("unavailable"))
        with pytest.raises(Overloaded):
            await a.generate("1", 10, 0.5)
        for _ in range(3):
            with pytest.raises(ServerError):
                await a.generate("2", 10, 0.5)
        fake.set_mode("openai", None)
        assert (await a.generate("3", 10, 0.5)).text.endswith("3")
    finally:
        await a.aclose()
    assert fake.calls("openai") == 5 and fake.calls() == 5


async def test_channels_fail_independently(fake: FakeVendorServer) -> None:
    a = adapter_for("openai", fake)
    b = adapter_for("openai_compatible", fake)
    try:
        fake.set_mode("openai", "server_error")
        assert (await b.generate("fine", 10, 0.5)).text.endswith("fine")
        with pytest.raises(ServerError):
            await a.generate("broken", 10, 0.5)
    finally:
        await a.aclose()
        await b.aclose()
    assert sorted(r.channel for r in fake.requests()) == ["compat", "openai"]


async def test_fixed_latency_is_applied(fake: FakeVendorServer) -> None:
    fake.configure(latency_ms=150)
    a = adapter_for("anthropic", fake)
    try:
        c = await a.generate("slow", 10, 0.5)
    finally:
        await a.aclose()
    assert c.latency_ms >= 150


def test_unknown_fault_kind() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("explode")  # type: ignore[arg-type]


async def test_separate_process_with_remote_control() -> None:
    with spawn_fake() as remote:
        assert remote.url.startswith("http://127.0.0.1:")
        remote.script("gemini", "overloaded")
        a = adapter_for("gemini", remote)
        try:
            with pytest.raises(Overloaded):
                await a.generate("hi", 10, 0.5)
            assert (await a.generate("hi", 10, 0.5)).text == "Echo from gemini-2.5-flash: hi"
        finally:
            await a.aclose()
        assert remote.calls("gemini") == 2
        remote.reset()
        assert remote.calls() == 0


def test_cli_prints_the_url_and_serves() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes", "--port", "0", "--latency-ms", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        import urllib.request

        with urllib.request.urlopen(url + "/_fake/stats", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_network_guard_fails_a_test_that_leaves_loopback(tmp_path: Path) -> None:
    test = tmp_path / "test_leak.py"
    test.write_text(textwrap.dedent("""
        import socket, pytest

        def test_leaks():
            s = socket.socket()
            try:
                with pytest.raises(ConnectionRefusedError):
                    s.connect(("192.0.2.1", 443))
            finally:
                s.close()

        def test_local_is_fine():
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            c = socket.create_connection(s.getsockname())
            c.close(); s.close()
    """))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.fakes.pytest_plugin", "-p", "no:cacheprovider",
         "-o", "addopts=", str(test)],
        cwd=REPO, capture_output=True, text=True,
    )
    # the refused connection surfaces as an error of test_leaks even though it caught the refusal
    assert "2 passed, 1 error" in out.stdout, out.stdout
    assert "ERROR" in out.stdout and "test_leak.py::test_leaks" in out.stdout
    assert "test tried to leave 127.0.0.1: connect to ('192.0.2.1', 443)" in out.stdout
