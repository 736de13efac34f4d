"""The service app's direct routes (engine/server/app.py, `_ServiceApp`): the same answers as the full
starlette stack, which takes over whenever the app is changed after it is built."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.server.app import _ServiceApp, create_app
from engine.server.config import ServeConfig
from engine.server.doors import http_error
from engine.server.logs import RequestIdMiddleware
from tests.fakes import FakeVendorServer
from tests.test_serve_support import fake_policy


class Counting:
    """A pass-through middleware that counts the requests it sees."""

    seen = 0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Counting.seen += 1
        await self.app(scope, receive, send)


async def _echo(request: Request) -> Response:
    body = await request.body()
    if body == b"boom":
        raise RuntimeError("boom")
    # which way it came: the full stack's exception middleware leaves its mark in the scope
    full = "starlette.exception_handlers" in request.scope
    return JSONResponse({"full_stack": full, "path_params": request.path_params, "body": body.decode(),
                         "endpoint": request.scope["endpoint"] is _echo}, headers={"x-echo": "1"})


def _app(*, direct: bool = True) -> _ServiceApp:
    return _ServiceApp(routes=[Route("/v1/chat/completions", _echo, methods=["POST"])],
                       middleware=[Middleware(RequestIdMiddleware)],
                       exception_handlers={404: http_error, 405: http_error},
                       direct={"/v1/chat/completions": _echo} if direct else {})


def _answer(app: ASGIApp, body: bytes = b"hi", **kw: Any) -> tuple[int, dict[str, str], Any]:
    with TestClient(app, raise_server_exceptions=False, **kw) as c:
        r = c.post("/v1/chat/completions", content=body)
    headers = {k: v for k, v in r.headers.items() if k != "x-request-id"}
    assert ("x-request-id" in r.headers) == (r.status_code != 500)  # the 500 comes from outside the id middleware
    try:
        return r.status_code, headers, r.json()
    except ValueError:
        return r.status_code, headers, r.text


def test_a_direct_route_answers_as_the_full_stack() -> None:
    direct, full = _answer(_app()), _answer(_app(direct=False))
    assert direct[2]["full_stack"] is False and full[2]["full_stack"] is True
    for answer in (direct, full):
        answer[2].pop("full_stack")
        answer[1].pop("content-length")  # "false" and "true" differ by a byte
    assert direct == full
    assert direct[2] == {"path_params": {}, "body": "hi", "endpoint": True}


def test_an_exception_is_a_500_and_goes_on_to_the_server() -> None:
    assert _answer(_app(), b"boom") == _answer(_app(direct=False), b"boom") == (
        500, {"content-length": "21", "content-type": "text/plain; charset=utf-8"}, "Internal Server Error")
    with TestClient(_app()) as c, pytest.raises(RuntimeError, match="boom"):
        c.post("/v1/chat/completions", content=b"boom")


def test_a_changed_app_takes_the_full_stack() -> None:
    app = _app()
    app.add_middleware(Counting)
    Counting.seen = 0
    status, _, body = _answer(app)
    assert status == 200 and body["full_stack"] is True and Counting.seen == 1
    handled = _app()
    handled.add_exception_handler(RuntimeError, lambda request, exc: JSONResponse({"handled": True}, 418))
    assert _answer(handled, b"boom")[0::2] == (418, {"handled": True})


def test_other_methods_paths_and_root_paths_take_the_full_stack() -> None:
    assert _answer(_app(), root_path="/api")[2]["full_stack"] is True
    with TestClient(_app()) as c:
        assert c.get("/v1/chat/completions").status_code == 405
        assert c.post("/v1/other").status_code == 404


@pytest.fixture
def policy(fake: FakeVendorServer, tmp_path: Path) -> Iterator[str]:
    p = tmp_path / "policy.yaml"
    p.write_text(fake_policy(fake))
    yield str(p)


def test_the_service_answers_alike_on_both_ways(policy: str) -> None:
    answers = []
    for extra in (False, True):
        app = create_app(ServeConfig(policy=policy, reload_interval_s=0))
        if extra:
            app.add_middleware(Counting)  # the service then takes the full stack
        Counting.seen = 0
        with TestClient(app) as c:
            ok = c.post("/v1/chat/completions", json={"model": "auto", "max_tokens": 20,
                                                      "messages": [{"role": "user", "content": "Say hello"}]})
            bad = c.post("/v1/chat/completions", content=b"{not json")
            msg = c.post("/v1/messages", json={"model": "auto", "max_tokens": 20,
                                               "messages": [{"role": "user", "content": "Say hello"}]})
        assert Counting.seen == (3 if extra else 0)
        out = []
        for r in (ok, bad, msg):
            body = json.loads(r.content)
            body.pop("id", None)
            body.pop("created", None)
            out.append((r.status_code, sorted(r.headers), body))
            assert r.headers["x-request-id"]
        answers.append(out)
    assert answers[0] == answers[1]
