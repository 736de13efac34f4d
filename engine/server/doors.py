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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from adapters.base import estimate_request_tokens
from engine.runtime.result import RoutedCompletion
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
from engine.server.streaming import ServedModel, StreamWriter

if TYPE_CHECKING:
    from engine.server.app import Service

__all__ = ["Door", "Fail", "MessagesDoor", "http_error", "model_by_id"]

_JSON = "application/json"


Fail = Callable[[WireError, Request, Principal | None, str | None], Response]


@dataclass(frozen=True, slots=True)
class Door:
    """What one wire format (OpenAI chat completions, Anthropic Messages) brings to the request flow
    both doors share (`Service.serve_chat`): everything else, from the key check to the settled
    quota, is the same code."""

    parse: Callable[[bytes], ChatRequest]
    """The request body in the door's format."""
    fail: Fail
    """A failure as the door's error response (logged)."""
    body: Callable[[RoutedCompletion], str | bytes]
    """A served result as the door's JSON body."""
    encoder: Callable[[ChatRequest, ServedModel], StreamWriter]
    """The door's SSE framing for one stream."""
    id_headers: tuple[str, ...] = ("x-request-id",)
    """The headers that carry the request id (the anthropic SDK reads `request-id` too)."""


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
        self.door = Door(
            parse=parse_messages_request, fail=_fail, body=message_body,
            encoder=lambda chat, served: MessageStreamEncoder(
                f"msg_{served.completion_id}", served.model or chat.model,
                input_tokens=estimate_request_tokens(chat.messages, chat.options)),
            id_headers=("x-request-id", "request-id"))

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
        """`POST /v1/messages`: admitted and served as on the OpenAI door (key, model allow-list, key
        limits and quotas; a malformed body of a known key still gets its decision-log row)."""
        return await self.service.serve_chat(request, self.door)
