"""The HTTP service: an OpenAI-compatible API over the router, with auth, reload and ops pages.

    create_app(ServeConfig(policy="policies/default.yaml", keys_db="keys.db"))   # an ASGI app

`engine serve` runs it on uvicorn (uvloop, httptools); with several workers each imports
`engine.server.app:create_app` as a factory and reads its config from `ENGINE_SERVE_*`.

Endpoints: `POST /v1/chat/completions`, `GET /v1/models` (and `/v1/models/{id}`), `POST /v1/messages`
(Anthropic's format, and `/v1/messages/count_tokens`: engine/server/doors.py), `POST /v1/explain`,
`GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /dashboard` (+ its data and static files).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.base import TextDelta
from engine.errors import QuotaExceeded
from engine.policy.model import Policy
from engine.runtime.result import StreamDone
from engine.runtime.router import Router
from engine.server.admin import AdminAPI
from engine.server.auth import Authenticator, KeyLimits, KeyQuotas, Principal
from engine.server.config import ServeConfig
from engine.server.doors import Door, Fail, MessagesDoor, http_error, model_by_id
from engine.server.errormap import map_error
from engine.server.keystore import KeyStore
from engine.server.livestats import LiveStats
from engine.server.logs import (
    RequestIdMiddleware,
    close_request_id,
    current_request_id,
    log_event,
    log_failure,
    note_request_id,
    open_request_id,
    with_request_id,
)
from engine.server.openai_wire import (
    ChatRequest,
    StreamEncoder,
    WireError,
    completion_body,
    models_body,
    parse_chat_request,
)
from engine.server.ops import OpsPages
from engine.server.reload import Live, PolicyHolder
from engine.server.streaming import RouterStream, ServedModel, stream_events

__all__ = ["Service", "create_app"]

log = logging.getLogger("engine.server")

_JSON = "application/json"
_RESERVED = ("tenant", "key", "tier")


def _json_error(err: WireError) -> Response:
    return Response(err.body(), status_code=err.status, media_type=_JSON, headers=err.headers)


# The vendor SDK each adapter kind imports on first use. Importing one takes 0.5-6 s (the
# longer on a loaded machine); on the first request that time would count against the attempt's
# timeout and could fail it, so the service imports them while it loads the policy.
@dataclass(frozen=True, slots=True)
class Admitted:
    """A request either door has let in: who sent it, what it asks, what it holds until it ends."""

    who: Principal
    chat: ChatRequest
    reservation: Any
    release: Callable[[], None]
    """Gives the key's rpm/parallel slot back."""


class Service:
    """One process's service state: the live router, keys, stats and background tasks.

    Args:
        config: how to run.
        metrics: Prometheus metrics for the routers (default: an `engine.ops.metrics.RouterMetrics`
            made with the first policy's `metrics.tenant_label`, kept across reloads).
    """

    def __init__(self, config: ServeConfig, *, metrics: Any = None) -> None:
        self.config = config
        self.openai_door = Door(
            parse=lambda body: parse_chat_request(body, default_max_tokens=config.default_max_tokens),
            fail=self._fail, body=lambda result: completion_body(result, int(time.time())),
            encoder=lambda chat, served: StreamEncoder(f"chatcmpl-{served.completion_id}", int(time.time()),
                                                       served.model or chat.model, include_usage=chat.include_usage))
        self.stats = LiveStats(metrics)
        store = KeyStore(config.keys_db) if config.keys_db else None
        self.auth = Authenticator(store, refresh_s=config.keys_refresh_s)
        self.key_quotas = KeyQuotas(config.keys_db)
        self.key_limits = KeyLimits()
        self.tracer: Any = None
        self.holder = PolicyHolder(config.policy, self._build, interval_s=config.reload_interval_s)
        self.ops = OpsPages(self.holder, self.auth, self.stats)
        self.ops.require_checks = config.ready_check_s > 0
        self._tasks: list[asyncio.Task[None]] = []

    def _build(self, policy: Policy) -> Router:
        if self.stats.metrics is None:  # the first policy decides the labels; reloads keep the registry
            from engine.ops.metrics import RouterMetrics

            self.stats.metrics = RouterMetrics(tenant_label=policy.metrics_tenant_label)
        if self.config.otel:
            if self.tracer is None:
                from engine.ops.tracing import TraceObserver, otlp_tracer_provider

                self.tracer = TraceObserver(policy=policy, tracer_provider=otlp_tracer_provider())
                self.stats.observers.append(self.tracer)
            self.tracer.policy = policy  # vendor names and model ids of the policy now live
        log_db = self.config.log_db or (None if policy.log.sqlite else self.config.default_log_db)
        kwargs: dict[str, Any] = {"log_path": log_db} if log_db else {}
        router = Router(policy, metrics=self.stats, **kwargs)
        router.adapters.preload()  # this runs in a worker thread: SDK imports stay off the event loop
        return router

    async def start(self) -> None:
        """Load the policy and start the file and key watchers."""
        await self.holder.start()
        self.holder.install_sighup()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.holder.watch())]
        if self.auth.enabled:
            self._tasks.append(loop.create_task(self.auth.watch()))
        if self.config.ready_check_s > 0:
            self._tasks.append(loop.create_task(self._check_providers()))
        live = self.holder.live
        assert live is not None
        log.info("serving policy %s (%s); auth %s", self.config.policy, live.version[:12],
                 "on" if self.auth.enabled else "OFF")

    async def _check_providers(self) -> None:
        """Probe the live policy's providers now and every `ready_check_s` (for `/readyz`)."""
        from engine.ops.doctor import diagnose, summary

        while True:
            live = self.holder.live
            if live is not None:
                try:
                    checks = await diagnose(live.router.policy)
                except Exception:  # the loop must outlive one broken check
                    log.exception("the provider checks failed to run")
                else:
                    failing = [c.as_dict() for c in checks if c.status == "fail"]
                    was = self.ops.checks
                    self.ops.checks = {"ok": not failing, "summary": summary(checks), "at": time.time(),
                                       "failing": failing}
                    if was is None or was["ok"] != (not failing):
                        log_event(log, logging.INFO if not failing else logging.ERROR, "provider_checks",
                                  summary(checks), ok=not failing)
            await asyncio.sleep(self.config.ready_check_s)

    async def stop(self) -> None:
        """Stop the watchers, then close every router (flushing the decision log)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.holder.aclose()
        if self.tracer is not None:  # export what is still buffered
            await asyncio.to_thread(self.tracer.shutdown)
        self.key_quotas.close()
        if self.auth.store is not None:
            self.auth.store.close()

    # -- request helpers --------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise WireError(400, f"Invalid Content-Length header: {length!r}.")
            if int(length) > limit:
                raise WireError(413, f"Request body of {length} bytes exceeds the limit of {limit} bytes.",
                                code="request_too_large")
            return await request.body()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WireError(413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _meta(chat: ChatRequest, who: Principal) -> dict[str, Any]:
        meta: dict[str, Any] = {k: v for k, v in chat.metadata.items() if k not in _RESERVED}
        if chat.user is not None:
            meta["user"] = chat.user
        meta.update(who.metadata)
        meta["tenant"], meta["key"], meta["tier"] = who.tenant, who.key_id, who.tier
        return meta

    @staticmethod
    def _pin(chat: ChatRequest, live: Live) -> str | None:
        if chat.model == "auto":
            return None
        policy = live.router.policy
        if chat.model in policy.models or any(r.name == chat.model for r in policy.routes):
            return chat.model
        raise WireError(404, f"The model `{chat.model}` does not exist. Use \"auto\", a model or a route name of "
                        "the policy (GET /v1/models lists them).", param="model", code="model_not_found")

    def _map(self, e: Exception, live: Live) -> WireError:
        return map_error(e, self.stats, cooldown_s=live.router.policy.health.open_circuit.cooldown_s)

    async def _settle(self, who: Principal, reservation: Any, tokens: int, cost: float) -> None:
        if reservation is not None:
            try:
                await self.key_quotas.settle(who, reservation, tokens, cost)
            except Exception:
                log.exception("could not settle the quota of key %s", who.key_id)

    # -- endpoints --------------------------------------------------------------------------

    def _log_rejected(self, err: WireError, who: Principal) -> None:
        """An authenticated request the door refused as malformed still gets its decision-log row
        (outcome `bad_request`, under the id the response's x-request-id carries)."""
        live = self.holder.live
        if live is None:
            return
        from engine.errors import RequestError

        meta = {**who.metadata, "tenant": who.tenant, "key": who.key_id, "tier": who.tier}
        where = f" ({err.param})" if err.param else ""
        live.router.recorder.bad_request(current_request_id(), time.time(), meta, RequestError(err.message + where))

    def _fail(self, err: WireError, request: Request, who: Principal | None = None,
              model: str | None = None) -> Response:
        log_failure(err, request, who, model)
        return _json_error(err)

    async def admit(self, request: Request, parse: Callable[[bytes], ChatRequest],
                    fail: Fail,
                    ) -> Admitted | Response:
        """Either door's admission: the key, the body (`parse`, in the door's format), the key's model
        allow-list, its rpm/parallel limits and its quota. A refusal is answered with `fail` (the
        door's error shape); a malformed body of a known key still gets its decision-log row."""
        who: Principal | None = None
        asked: str | None = None
        counted = False
        try:
            who = self.auth.authenticate(request.headers)
            chat = parse(await self._body(request))
            asked = chat.model
            who.check_model(chat.model)
            counted = await self.key_limits.enter(who)
            reservation = await self.key_quotas.admit(who) if who.quota is not None else None
        except (WireError, QuotaExceeded) as e:
            if counted and who is not None:
                self.key_limits.leave(who)
            err = e if isinstance(e, WireError) else map_error(e, self.stats)
            if isinstance(e, WireError) and e.status in (400, 413) and who is not None:
                self._log_rejected(e, who)
            return fail(err, request, who, asked)
        key_limits, holder = self.key_limits, who

        def release() -> None:
            if counted:
                key_limits.leave(holder)

        return Admitted(who, chat, reservation, release)

    async def open_stream(self, request: Request, live: Live, a: Admitted,
                          fail: Fail,
                          ) -> tuple[RouterStream, TextDelta | StreamDone, ServedModel] | Response:
        """Start the router's stream and wait for its first event: a failure until then is a real
        HTTP error (answered with `fail`, everything the request held given back)."""
        chat, who = a.chat, a.who
        served = ServedModel()
        try:
            events = stream_events(live.router, served, messages=chat.messages, max_tokens=chat.max_tokens,
                                   temperature=chat.temperature, stop=chat.stop or None,
                                   meta=self._meta(chat, who), model=self._pin(chat, live), options=chat.options)
            first = await events.__anext__()
        except Exception as e:
            self.holder.release(live)
            a.release()
            await self._settle(who, a.reservation, 0, 0.0)
            return fail(self._map(e, live), request, who, chat.model)
        note_request_id(served.completion_id)  # the log's row is written at the end; its id is known now
        return events, first, served

    async def chat_completions(self, request: Request) -> Response:
        """`POST /v1/chat/completions`."""
        return await self.serve_chat(request, self.openai_door)

    async def serve_chat(self, request: Request, door: Door) -> Response:
        """Either door's request: admitted (`admit`), then served as JSON or as a stream in the
        door's format; the key's slot, the live policy and the quota reservation are given back
        whatever happens."""
        admitted = await self.admit(request, door.parse, door.fail)
        if isinstance(admitted, Response):
            return admitted
        if admitted.chat.stream:  # the stream releases the key's slot when its body ends
            return await self._stream(request, self.holder.acquire(), admitted, door)
        try:
            return await self._complete(request, admitted, door)
        finally:
            admitted.release()

    @staticmethod
    def _headers(door: Door, live: Live, model: str, request_id: str) -> dict[str, str]:
        out = dict.fromkeys(door.id_headers, request_id)
        out["x-router-model"] = model
        out["x-router-policy"] = live.version[:12]
        return out

    async def _complete(self, request: Request, a: Admitted, door: Door) -> Response:
        chat, who = a.chat, a.who
        live = self.holder.acquire()
        tokens, cost = 0, 0.0
        try:
            result = await live.router.generate(
                messages=chat.messages, max_tokens=chat.max_tokens, temperature=chat.temperature,
                stop=chat.stop or None, meta=self._meta(chat, who), model=self._pin(chat, live),
                options=chat.options)
            tokens, cost = result.input_tokens + result.output_tokens, result.cost_usd
            body = door.body(result)
        except Exception as e:
            return door.fail(self._map(e, live), request, who, chat.model)
        finally:
            self.holder.release(live)
            if a.reservation is not None:
                await self._settle(who, a.reservation, tokens, cost)
        headers = self._headers(door, live, result.model, result.request_id)
        headers.update({"x-router-provider": result.provider, "x-router-route": result.route or "",
                        "x-router-cached": "true" if result.cached else "false"})
        return _JSONAnswer(body, headers)

    async def _stream(self, request: Request, live: Live, a: Admitted, door: Door) -> Response:
        opened = await self.open_stream(request, live, a, door.fail)
        if isinstance(opened, Response):
            return opened
        events, first, served = opened
        chat, who, reservation, release = a.chat, a.who, a.reservation, a.release

        def mid_stream(e: Exception) -> WireError:
            err = self._map(e, live)
            log_failure(err, request, who, chat.model, streaming=True)
            return err

        async def done(tokens: int, cost: float) -> None:
            self.holder.release(live)
            release()
            if reservation is not None:
                await self._settle(who, reservation, tokens, cost)

        headers = self._headers(door, live, served.model or "", current_request_id())
        return events.response(door.encoder(chat, served), first, mid_stream, done, headers)

    async def models(self, request: Request) -> Response:
        """`GET /v1/models`: `auto`, the routes and the models of the live policy."""
        try:
            self.auth.authenticate(request.headers)
        except WireError as e:
            return self._fail(e, request)
        live = self.holder.acquire()
        try:
            policy = live.router.policy
            body = models_body({m.name: m.provider for m in policy.models.values()},
                               tuple(r.name for r in policy.routes), int(live.loaded_at))
        finally:
            self.holder.release(live)
        return Response(body, media_type=_JSON)

    async def explain(self, request: Request) -> Response:
        """`POST /v1/explain`: the decision for a chat completions body, without calling any vendor."""
        who = None
        try:
            who = self.auth.authenticate(request.headers)
            chat = parse_chat_request(await self._body(request), default_max_tokens=self.config.default_max_tokens)
            who.check_model(chat.model)
        except WireError as e:
            return self._fail(e, request, who)
        live = self.holder.acquire()
        try:
            pinned = self._pin(chat, live)
            decision = live.router.explain(messages=chat.messages, max_tokens=chat.max_tokens,
                                           temperature=chat.temperature, stream=chat.stream,
                                           meta=self._meta(chat, who), options=chat.options)
            out = decision.as_dict()
        except Exception as e:
            return self._fail(self._map(e, live), request, who, chat.model)
        finally:
            self.holder.release(live)
        out["policy_version"] = live.version
        if pinned is not None:
            out["pinned"] = pinned
        return Response(json.dumps(out, default=str), media_type=_JSON)


class _JSONAnswer(Response):
    """A 200 JSON answer with the service's own headers: the bytes starlette's `Response` would
    send, without its general header handling."""

    media_type = _JSON

    def __init__(self, body: str | bytes, headers: Mapping[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body = body.encode() if isinstance(body, str) else body
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers += ((b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"))


def create_app(config: ServeConfig | None = None, *, metrics: Any = None) -> Starlette:
    """The ASGI app (uvicorn factory: `engine.server.app:create_app`, config from `ENGINE_SERVE_*`)."""
    service = Service(config or ServeConfig.from_env(), metrics=metrics)
    messages = MessagesDoor(service)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        await service.start()
        try:
            yield {}
        finally:
            await service.stop()

    routes = [
        Route("/v1/chat/completions", service.chat_completions, methods=["POST"]),
        Route("/chat/completions", service.chat_completions, methods=["POST"]),
        Route("/v1/models", service.models, methods=["GET"]),
        Route("/v1/models/{model:path}", model_by_id, methods=["GET"]),
        Route("/v1/messages", messages.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
        Route("/v1/explain", service.explain, methods=["POST"]),
        *service.ops.routes(),
        *AdminAPI(service.auth).routes(),
    ]
    app = _ServiceApp(routes=routes, lifespan=lifespan, middleware=[Middleware(RequestIdMiddleware)],
                      exception_handlers={404: http_error, 405: http_error},
                      direct={"/v1/chat/completions": service.chat_completions,
                              "/chat/completions": service.chat_completions, "/v1/messages": messages.messages})
    app.state.service = service
    return app


class _ServiceApp(Starlette):
    """The service's app: a Starlette app whose busiest routes (POST chat completions and messages)
    are called from `__call__`, without walking the middleware stack and the router.

    What those layers do for these routes is done here: the x-request-id middleware as it is,
    and the server-error middleware's 500 for an exception before the response has started
    (then the exception goes on to uvicorn). The router, the route and the exception middleware
    have nothing to do for them (their endpoints answer every error themselves). Measured with a
    trivial endpoint: 15-18 -> 10 us a request. If the app is changed after it is built (another
    middleware, an exception handler, debug, a body limit) or mounted under a root path, every
    request takes the usual way.
    """

    def __init__(self, *, direct: Mapping[str, Callable[[Request], Awaitable[Response]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direct = {path: _endpoint_app(endpoint) for path, endpoint in direct.items()}
        self._built_with = (list(self.user_middleware), dict(self.exception_handlers))
        self._direct_on: bool | None = None  # decided at the first request, when the app is what it will be

    def _direct_allowed(self) -> bool:
        middleware, handlers = self._built_with
        self._direct_on = (self.user_middleware == middleware and self.exception_handlers == handlers
                           and not self.debug and getattr(self, "max_body_size", None) is None)
        return self._direct_on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            app = self._direct.get(scope["path"])
            if app is not None and (self._direct_on if self._direct_on is not None else self._direct_allowed()):
                await self._call_direct(app, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _call_direct(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        scope.setdefault("router", self.router)
        started = False
        token = open_request_id()  # what RequestIdMiddleware does, in the same wrapper of `send`

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = with_request_id(message)
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        except Exception:
            if not started:  # what starlette's ServerErrorMiddleware answers (debug off, no handler)
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        finally:
            close_request_id(token)


def _endpoint_app(endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["path_params"] = {}
        scope["endpoint"] = endpoint
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app
