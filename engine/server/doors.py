"""The service's other doors: Anthropic's Messages API, one model by id, and JSON errors for
unknown paths and methods.

    POST /v1/messages                 Anthropic Messages, JSON or SSE (`stream: true`)
    POST /v1/messages/count_tokens    `{"input_tokens": N}` (the router's estimate)
    GET  /v1/models/{id}              one entry of `GET /v1/models`

The Messages door shares everything with the OpenAI door but the wire format: the same key
check (`x-api-key` or `Authorization: Bearer`), key quotas, policy, router, decision log and
`x-router-*` headers; any vendor of the policy may serve it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from adapters.base import estimate_request_tokens
from engine.server.anthropic_wire import (
    MessageStreamEncoder,
    count_tokens_body,
    error_body,
    message_body,
    parse_count_tokens_request,
    parse_messages_request,
)
from engine.server.auth import Principal
from engine.server.logs import current_request_id, log_failure
from engine.server.openai_wire import ChatRequest, WireError, model_body
from engine.server.reload import Live

if TYPE_CHECKING:
    from engine.server.app import Admitted, Service

__all__ = ["MessagesDoor", "http_error", "model_by_id"]

_JSON = "application/json"


def _anthropic_error(err: WireError) -> Response:
    headers = {**err.headers, "request-id": current_request_id()}  # the anthropic SDK reads `request-id`
    return Response(error_body(err), status_code=err.status, media_type=_JSON, headers=headers)


def _fail(err: WireError, request: Request, who: Principal | None = None, model: str | None = None) -> Response:
    log_failure(err, request, who, model)
    return _anthropic_error(err)


def _openai_error(err: WireError) -> Response:
    return Response(err.body(), status_code=err.status, media_type=_JSON, headers=err.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 as JSON in the door's error shape (Anthropic's under /v1/messages)."""
    assert isinstance(exc, HTTPException)
    path, method = request.url.path, request.method
    if exc.status_code == 405:
        err = WireError(405, f"Method {method} is not allowed on {path}.", code="method_not_allowed",
                        headers=exc.headers)
    elif exc.status_code == 404:
        err = WireError(404, f"Unknown request URL: {method} {path}. The service answers POST "
                        "/v1/chat/completions, POST /v1/messages, GET /v1/models and the ops endpoints "
                        "(docs/service.md).", code="unknown_url")
    else:
        err = WireError(exc.status_code, str(exc.detail), headers=exc.headers)
    return _anthropic_error(err) if path.startswith("/v1/messages") else _openai_error(err)


async def model_by_id(request: Request) -> Response:
    """`GET /v1/models/{model}`: `auto`, a route or a model of the live policy; else 404."""
    service: Service = request.app.state.service
    try:
        service.auth.authenticate(request.headers)
    except WireError as e:
        return _openai_error(e)
    live = service.holder.acquire()
    try:
        policy = live.router.policy
        body = model_body(request.path_params["model"], {m.name: m.provider for m in policy.models.values()},
                          tuple(r.name for r in policy.routes), int(live.loaded_at))
    except WireError as e:
        return _openai_error(e)
    finally:
        service.holder.release(live)
    return Response(body, media_type=_JSON)


class MessagesDoor:
    """Anthropic's Messages API over the service's router."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def _headers(self, live: Live, model: str, request_id: str | None = None) -> dict[str, str]:
        out = {"x-router-model": model, "x-router-policy": live.version[:12]}
        if request_id is not None:
            out["x-request-id"] = out["request-id"] = request_id  # the anthropic SDK reads `request-id`
        return out

    async def count_tokens(self, request: Request) -> Response:
        """`POST /v1/messages/count_tokens`: the router's estimate of the input tokens."""
        s = self.service
        try:
            s.auth.authenticate(request.headers)
            chat = parse_count_tokens_request(await s._body(request))
        except WireError as e:
            return _fail(e, request)
        return Response(count_tokens_body(chat), media_type=_JSON)

    async def messages(self, request: Request) -> Response:
        """`POST /v1/messages`: admitted as on the OpenAI door (key, model allow-list, key limits and
        quotas; a malformed body of a known key still gets its decision-log row)."""
        s = self.service
        admitted = await s.admit(request, parse_messages_request, _fail)
        if isinstance(admitted, Response):
            return admitted
        chat, who, reservation, release = admitted.chat, admitted.who, admitted.reservation, admitted.release
        if chat.stream:  # the stream releases the key's slot when its body ends
            return await self._stream(request, s.holder.acquire(), admitted)
        try:
            return await self._complete(request, chat, who, reservation)
        finally:
            release()

    async def _complete(self, request: Request, chat: ChatRequest, who: Principal, reservation: Any) -> Response:
        s = self.service
        live = s.holder.acquire()
        tokens, cost = 0, 0.0
        try:
            pinned = s._pin(chat, live)
            result = await live.router.generate(
                messages=chat.messages, max_tokens=chat.max_tokens, temperature=chat.temperature,
                stop=chat.stop or None, meta=s._meta(chat, who), model=pinned, options=chat.options)
            tokens, cost = result.input_tokens + result.output_tokens, result.cost_usd
            body = message_body(result)
        except Exception as e:
            return _fail(s._map(e, live), request, who, chat.model)
        finally:
            s.holder.release(live)
            if reservation is not None:
                await s._settle(who, reservation, tokens, cost)
        headers = self._headers(live, result.model, result.request_id)
        headers.update({"x-router-provider": result.provider, "x-router-route": result.route or "",
                        "x-router-cached": "true" if result.cached else "false"})
        return Response(body, media_type=_JSON, headers=headers)

    async def _stream(self, request: Request, live: Live, a: Admitted) -> Response:
        s = self.service
        opened = await s.open_stream(request, live, a, _fail)
        if isinstance(opened, Response):
            return opened
        events, first, served = opened
        chat, who, reservation, release = a.chat, a.who, a.reservation, a.release
        enc = MessageStreamEncoder(f"msg_{served.completion_id}", served.model or chat.model,
                                   input_tokens=estimate_request_tokens(chat.messages, chat.options))

        def mid_stream(e: Exception) -> WireError:
            err = s._map(e, live)
            log_failure(err, request, who, chat.model, streaming=True)
            return err

        async def done(tokens: int, cost: float) -> None:
            s.holder.release(live)
            release()
            if reservation is not None:
                await s._settle(who, reservation, tokens, cost)

        return events.response(enc, first, mid_stream, done, self._headers(live, served.model or "",
                                                                           current_request_id()))
