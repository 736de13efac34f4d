"""Pytest fixtures of the fake vendors, and the guard that keeps tests on 127.0.0.1.

Register once in the root conftest: `pytest_plugins = ["tests.fakes.pytest_plugin"]`
(or run with `-p tests.fakes.pytest_plugin`).

Fixtures:
    fake_vendor_server  one server for the session (background thread)
    fake                the same server, reset before and after each test
    fake_vendors        alias of `fake` (for suites that already use that name)
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.server import FakeVendorServer

_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_invalid_name(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    return isinstance(host, str) and (host.rstrip(".").lower() + ".").endswith(".invalid.")


@pytest.fixture(autouse=True)
def _loopback_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse any connection (and name lookup) beyond loopback, unless the test is marked `network`.

    A refused attempt also fails the test at teardown: an SDK would wrap the refusal in its own
    connection error, which a test expecting a ServerError could otherwise mistake for success.
    """
    if request.node.get_closest_marker("network") is not None:
        yield
        return
    blocked: list[str] = []

    def refuse(what: str) -> None:
        blocked.append(what)
        raise ConnectionRefusedError(f"tests may only reach 127.0.0.1; blocked {what}")

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            refuse(f"connect to {address!r}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            refuse(f"connect to {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_invalid_name(host):
            # RFC 6761: names under .invalid never resolve; answer as a resolver would, without
            # asking one, so a test can exercise a real DNS failure offline
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host is not None and not _is_local(host):
            refuse(f"name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    if blocked:
        pytest.fail(f"test tried to leave 127.0.0.1: {'; '.join(blocked)}")


@pytest.fixture(scope="session")
def fake_vendor_server() -> Iterator[FakeVendorServer]:
    """The fake OpenAI/Anthropic/Gemini server, started once per session."""
    with FakeVendorServer() as server:
        yield server


@pytest.fixture
def fake(fake_vendor_server: FakeVendorServer) -> Iterator[FakeVendorServer]:
    """The session's fake vendor server with no faults, records or settings left from other tests."""
    fake_vendor_server.reset()
    yield fake_vendor_server
    fake_vendor_server.reset()


@pytest.fixture
def fake_vendors(fake: FakeVendorServer) -> FakeVendorServer:
    """Alias of `fake`."""
    return fake
