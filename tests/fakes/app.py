"""The fake vendors' ASGI application: one app speaks OpenAI, Anthropic and Gemini.

Routes (any path prefix before `/v1...` names a separate channel, e.g. `/mistral/v1/...`):

    POST {prefix}/v1/chat/completions                             OpenAI (and OpenAI-compatible)
    POST {prefix}/v1/messages                                     Anthropic
    POST {prefix}/v1beta/models/{model}:generateContent           Gemini (v1 and v1alpha too; the SDK picks)
    POST {prefix}/v1beta/models/{model}:streamGenerateContent     Gemini, SSE with ?alt=sse

Control (used by tests and benchmarks when the fake runs in another process):

    POST /_fake/script  {"channel": "openai", "faults": [{"kind": "rate_limit"}, "server_error"]}
    POST /_fake/mode    {"channel": "openai", "fault": "server_error"}   (null clears)
    POST /_fake/config  {"latency_ms": 5, "context_window": 1000, "record": false, "models": ["gpt-4o"]}

Model look-ups (`GET .../models[/{id}]`, each vendor's shape) are in `tests.fakes.models`.
    POST /_fake/reset
    GET  /_fake/stats
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tests.fakes.faults import FakeState, Fault, RecordedRequest
from tests.fakes.models import CATALOGUE, model_body, model_route, models_list_body, not_found
from tests.fakes.wire import ANTHROPIC, GEMINI, OPENAI, Parsed, Vendor, make_reply

__all__ = ["FakeApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_GEMINI_PATH = re.compile(r"^(?P<prefix>.*)/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>\w+)$")
_SECRET_HEADERS = {b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key"}
_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream")


def _route(path: str) -> tuple[Vendor, str, str | None, bool] | None:
    """(vendor, channel, model from the path, streaming by path) of a vendor request."""
    if path.endswith("/v1/chat/completions"):
        return OPENAI, path[: -len("/v1/chat/completions")].strip("/") or "openai", None, False
    if path.endswith("/v1/messages"):
        return ANTHROPIC, path[: -len("/v1/messages")].strip("/") or "anthropic", None, False
    m = _GEMINI_PATH.match(path)
    if m and m["method"] in ("generateContent", "streamGenerateContent"):
        return GEMINI, m["prefix"].strip("/") or "gemini", m["model"], m["method"] == "streamGenerateContent"
    return None


def _presented_key(headers: dict[bytes, bytes], query: str) -> str | None:
    auth = headers.get(b"authorization", b"").decode()
    if auth.lower().startswith("bearer "):
        return auth[7:]
    for name in (b"x-api-key", b"x-goog-api-key", b"api-key"):
        if name in headers:
            return headers[name].decode()
    m = re.search(r"(?:^|&)key=([^&]+)", query)
    return m[1] if m else None


class FakeApp:
    """ASGI app of the fake vendors, driven by a `FakeState`."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        path: str = scope["path"]
        if path.startswith("/_fake/"):
            await self._control(scope["method"], path, body, send)
            return
        if scope["method"] == "GET":
            looked_up = model_route(path, dict(scope["headers"]))
            if looked_up is not None:
                await self._model_lookup(send, scope, *looked_up)
                return
        route = _route(path)
        if route is None or scope["method"] != "POST":
            await _send_json(send, 404, {"error": {"message": f"no fake vendor at {scope['method']} {path}"}})
            return
        vendor, channel, path_model, path_stream = route
        headers = dict(scope["headers"])
        query = scope.get("query_string", b"").decode()
        try:
            data = json.loads(body)
        except ValueError:
            self.state.take(channel, None)
            await _send_json(send, 400, {"error": {"message": "request body is not JSON"}})
            return
        record = RecordedRequest(
            vendor.name, channel, scope["method"], path, query,
            {k.decode(): ("<redacted>" if k in _SECRET_HEADERS else v.decode()) for k, v in headers.items()},
            data,
        ) if self.state.record else None
        fault = self.state.take(channel, record)
        parsed = vendor.parse(data, path_model)
        stream = path_stream or bool(data.get("stream"))
        n = next(self._ids)
        if fault is None and self.state.context_window is not None and parsed.input_tokens > self.state.context_window:
            fault = Fault("context_length")
        if self.state.latency_ms:
            await asyncio.sleep(self.state.latency_ms / 1000.0)
        if fault is None:
            await self._answer(send, vendor, parsed, n, stream)
        else:
            await self._fail(send, receive, vendor, parsed, n, stream, fault, _presented_key(headers, query))

    async def _model_lookup(self, send: Send, scope: Scope, vendor: Vendor, channel: str, model: str | None) -> None:
        headers = dict(scope["headers"])
        query = scope.get("query_string", b"").decode()
        record = RecordedRequest(
            vendor.name, channel, "GET", scope["path"], query,
            {k.decode(): ("<redacted>" if k in _SECRET_HEADERS else v.decode()) for k, v in headers.items()}, None,
        ) if self.state.record else None
        fault = self.state.take(channel, record)
        if fault is not None:
            status, extra, err = vendor.error(fault, None, _presented_key(headers, query))
            await _send_json(send, status, err, extra)
            return
        known = CATALOGUE if self.state.models is None else self.state.models
        if model is None:
            await _send_json(send, 200, models_list_body(known))
        elif model.removeprefix("models/") in known:
            await _send_json(send, 200, model_body(vendor, model.removeprefix("models/")))
        else:
            await _send_json(send, 404, not_found(vendor, model))

    async def _answer(self, send: Send, vendor: Vendor, parsed: Parsed, n: int, stream: bool) -> None:
        reply = make_reply(parsed)
        if stream:
            await _send_events(send, vendor.stream(parsed, reply, n))
        else:
            await _send_json(send, 200, vendor.ok(parsed, reply, n))

    async def _fail(
        self, send: Send, receive: Receive, vendor: Vendor, parsed: Parsed, n: int, stream: bool, fault: Fault,
        key: str | None,
    ) -> None:
        kind = fault.kind
        if kind == "timeout":
            if await self._stall(receive, fault.delay_s):
                await self._answer(send, vendor, parsed, n, stream)
            return
        if kind == "malformed":
            if stream:
                await _send_events(send, vendor.malformed_stream())
            else:
                await _send_raw(send, 200, [_JSON], b'{"id": "fake", "choices": [{"message": ')
            return
        if kind == "drop":
            await self._drop(send, vendor, parsed, n, stream, fault)
            return
        if kind == "stream_error" and stream:
            events = vendor.stream(parsed, make_reply(parsed), n)
            await _send_events(send, events[: fault.after_chunks] + [vendor.stream_error(fault)])
            return
        if kind == "stream_error":
            fault = Fault("server_error")
        if kind == "content_filter":
            body, events = vendor.blocked(parsed, n, stream)
            if body is not None:
                await _send_json(send, 200, body)
                return
            if events:
                await _send_events(send, events)
                return
        status, headers, err = vendor.error(fault, parsed, key)
        await _send_json(send, status, err, headers)

    async def _drop(self, send: Send, vendor: Vendor, parsed: Parsed, n: int, stream: bool, fault: Fault) -> None:
        # Returning without finishing the body makes the server close the connection mid-message.
        reply = make_reply(parsed)
        if stream:
            await send({"type": "http.response.start", "status": 200, "headers": [_SSE]})
            for event in vendor.stream(parsed, reply, n)[: fault.after_chunks]:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            return
        full = json.dumps(vendor.ok(parsed, reply, n)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_JSON, (b"content-length", str(len(full)).encode())]})
        await send({"type": "http.response.body", "body": full[: len(full) // 2], "more_body": True})

    async def _stall(self, receive: Receive, seconds: float) -> bool:
        """Wait `seconds`; False when the client gave up (or the server stops) first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.state.stopping:
            left = deadline - loop.time()
            if left <= 0:
                return True
            try:
                msg = await asyncio.wait_for(receive(), min(left, 0.05))
            except asyncio.TimeoutError:
                continue
            if msg["type"] == "http.disconnect":
                return False
        return False

    async def _control(self, method: str, path: str, body: bytes, send: Send) -> None:
        state = self.state
        try:
            data: dict[str, Any] = json.loads(body) if body else {}
            if path == "/_fake/stats" and method == "GET":
                await _send_json(send, 200, state.stats())
                return
            if method != "POST":
                raise ValueError(f"{method} {path} is not a control operation")
            if path == "/_fake/script":
                state.script(data["channel"], *(Fault.from_json(f) for f in data["faults"]))
            elif path == "/_fake/mode":
                fault = data.get("fault")
                state.set_mode(data["channel"], Fault.from_json(fault) if fault is not None else None)
            elif path == "/_fake/config":
                if "latency_ms" in data:
                    state.latency_ms = float(data["latency_ms"])
                if "context_window" in data:
                    state.context_window = data["context_window"]
                if "record" in data:
                    state.record = bool(data["record"])
                if "models" in data:
                    state.models = frozenset(data["models"])
            elif path == "/_fake/reset":
                state.reset()
            else:
                raise ValueError(f"unknown control path {path}")
        except (ValueError, KeyError, TypeError) as exc:
            await _send_json(send, 400, {"error": {"message": f"bad control request: {exc}"}})
            return
        await _send_json(send, 200, state.stats())


async def _send_raw(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_json(
    send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    extra = [(b"request-id", b"req_fake"), (b"x-request-id", b"req_fake")]
    await _send_raw(send, status, [_JSON, *extra, *(headers or [])], json.dumps(data).encode())


async def _send_events(send: Send, events: list[bytes]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [_SSE, (b"cache-control", b"no-cache")]})
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
