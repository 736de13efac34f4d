"""The service's log: one structured line per event an operator acts on, and request ids.

Events (the `event` field of each line): `request_failed` (an error answer: every model failed,
refused by policy or quota, rate limited, a bad request, a bad key), `circuit_open` /
`circuit_half_open` / `circuit_closed` / `demoted` / `restored`, `policy_reloaded`,
`policy_rejected`. `engine serve --log-format json` writes each as one JSON object per line;
the default text format is the same fields as `key=value` after the message.

    log_event(log, logging.WARNING, "request_failed", "all models failed", request_id=rid, status=503)

Request ids: `RequestIdMiddleware` gives each HTTP request a box (a context variable) that the
router's metrics hook fills with the decision log's id of the request (`note_request_id`), so
the id in the `x-request-id` header and in the log line is the one to look up in the decision
log; a request the router never saw (bad JSON, bad key) gets a fresh id.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

    from engine.server.auth import Principal
    from engine.server.openai_wire import WireError

__all__ = [
    "JsonFormatter",
    "RequestIdMiddleware",
    "TextFormatter",
    "current_request_id",
    "log_event",
    "note_request_id",
]

_FIELDS = "fields"  # the LogRecord attribute carrying an event's fields

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def log_event(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """Log one event line: `event` names it, `fields` are its data (None values are left out)."""
    if logger.isEnabledFor(level):
        data = {k: v for k, v in fields.items() if v is not None}
        logger.log(level, message, extra={"event": event, _FIELDS: data})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    data = getattr(record, _FIELDS, None)
    return dict(data) if isinstance(data, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, event, message, then the fields.

    Lines from other loggers (uvicorn's) get the same shape with `event` left out.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, tz=_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
        }
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
        out["message"] = record.getMessage()
        out.update(_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`2026-01-02 10:11:12,345 WARNING engine.server: message (event key=value ...)`, for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        event = getattr(record, "event", None)
        fields = _fields(record)
        if event is None and not fields:
            return line
        parts = [event] if event else []
        parts += [f"{k}={_text(v)}" for k, v in fields.items()]
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} ({' '.join(parts)}){sep}{tail}"


def _text(value: Any) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return json.dumps(s, ensure_ascii=False) if (not s or any(c in s for c in ' "=()')) else s


# -- request ids ------------------------------------------------------------------------------

_BOX: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("engine_request_id", default=None)


def note_request_id(request_id: str) -> None:
    """Remember the decision log's id of the request being served (the first one wins)."""
    box = _BOX.get()
    if box is not None and not box:
        box.append(request_id)


def current_request_id() -> str:
    """The id of the HTTP request being served: the decision log's, else a fresh one (kept)."""
    box = _BOX.get()
    if box is None:
        return uuid.uuid4().hex
    if not box:
        box.append(uuid.uuid4().hex)
    return box[0]


class RequestIdMiddleware:
    """Adds `x-request-id` to every HTTP response that lacks one, errors and ops pages included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = open_request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = with_request_id(message)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            close_request_id(token)


def open_request_id() -> contextvars.Token[list[str] | None]:
    """Start an HTTP request's id box (`note_request_id`, `current_request_id`); give the token
    back to `close_request_id` when the request is over."""
    return _BOX.set([])


def close_request_id(token: contextvars.Token[list[str] | None]) -> None:
    """End the id box `open_request_id` started."""
    _BOX.reset(token)


def with_request_id(start: Message) -> Message:
    """An `http.response.start` message with an `x-request-id` header (the request's id) unless it has one."""
    headers = start.get("headers", ())
    for k, _ in headers:
        if k.lower() == b"x-request-id":
            return start
    return {**start, "headers": [*headers, (b"x-request-id", current_request_id().encode())]}


# -- failed requests ----------------------------------------------------------------------------

_SERVER_LOG = logging.getLogger("engine.server")


def _level(status: int) -> int:
    if status >= 500:
        return logging.ERROR
    return logging.WARNING if status in (401, 403, 422, 429) else logging.INFO


def log_failure(err: WireError, request: Request | None, who: Principal | None = None,
                model: str | None = None, *, streaming: bool = False) -> None:
    """The log line of an error answer, either door: `quota_refused` for a quota's 429, else
    `request_failed` (`mid_stream` when a stream failed after its first chunk)."""
    event = "quota_refused" if err.code == "insufficient_quota" else "request_failed"
    log_event(_SERVER_LOG, _level(err.status), event, err.message, request_id=current_request_id(),
              status=err.status, code=err.code or err.type, path=request.url.path if request is not None else None,
              model=model, tenant=who.tenant if who is not None else None,
              key=who.key_id if who is not None else None, mid_stream=True if streaming else None)
