"""A routed stream as server-sent events of either door (OpenAI chunks, Anthropic events).

The first chunk on the wire must already name the model; `Router.stream` yields
`RoutedDelta`s that carry it, so fallback before the first token is reflected there. Text and
tool-call fragments go to a `StreamWriter` (OpenAI's `StreamEncoder`, Anthropic's
`MessageStreamEncoder`), which owns the format.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, cast

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from adapters.base import TextDelta
from adapters.conversation import ToolCallDelta
from engine.runtime.result import RoutedCompletion, StreamDone
from engine.runtime.router import Router
from engine.server.openai_wire import WireError

__all__ = ["RouterStream", "ServedModel", "StreamWriter", "stream_events"]


class StreamWriter(Protocol):
    """One door's stream format: the bytes of each step of a routed stream."""

    def first(self, text: str) -> bytes:
        """The opening of the stream, with the first text (may be "")."""

    def delta(self, text: str) -> bytes:
        """A text fragment."""

    def tool_call(self, d: ToolCallDelta) -> bytes:
        """A tool-call fragment (id and name on a call's first)."""

    def end(self, reason: str, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The finish reason, usage and end of the stream."""

    def error(self, err: WireError) -> bytes:
        """An error after the stream has started."""

class ServedModel:
    """What a stream's first chunk names: the completion id (the decision log's id of the
    request once its first event arrives), and the model."""

    __slots__ = ("completion_id", "model")

    def __init__(self) -> None:
        self.model: str | None = None
        self.completion_id = uuid.uuid4().hex


class RouterStream:
    """One request's `Router.stream`, with the final result kept once it arrives.

    Attributes:
        result: the routed completion, once the stream has finished.
    """

    def __init__(self, router: Router, served: ServedModel, **kwargs: Any) -> None:
        self._served: ServedModel | None = served
        self._events = cast(AsyncGenerator[TextDelta | StreamDone, None], router.stream(**kwargs))
        self.result: RoutedCompletion | None = None

    async def __anext__(self) -> TextDelta | StreamDone:
        event = await self._events.__anext__()
        if self._served is not None:  # the first event names the model serving the stream
            done = event.result if isinstance(event, StreamDone) else None
            self._served.model = done.model if done is not None else getattr(event, "model", None)
            rid = done.request_id if done is not None else getattr(event, "request_id", "")
            if rid:
                self._served.completion_id = rid
            self._served = None
        return event

    async def encode(self, enc: StreamWriter, first: TextDelta | StreamDone,
                     on_error: Callable[[Exception], WireError]) -> AsyncIterator[bytes]:
        """The SSE bytes of the whole stream, from its first event on.

        A failure after the first chunk cannot change the HTTP status any more; it is sent as
        an error event (the door's shape, which the SDKs raise as an APIError) and ends the stream.
        """
        event, started = first, False
        try:
            while True:
                if isinstance(event, StreamDone):
                    self.result = r = event.result
                    if not started:
                        yield enc.first("")
                    yield enc.end(r.finish_reason, r.input_tokens, r.output_tokens)
                    return
                call = getattr(event, "tool_call", None)
                if call is not None:
                    yield enc.tool_call(call) if started else enc.first("") + enc.tool_call(call)
                else:
                    yield enc.delta(event.text) if started else enc.first(event.text)
                started = True
                event = await self._events.__anext__()
        except StopAsyncIteration:
            return
        except Exception as e:
            yield enc.error(on_error(e))

    async def aclose(self) -> None:
        """Close the router's stream, even from a cancelled task (a client that went away)."""
        with anyio.CancelScope(shield=True):
            await self._events.aclose()

    def response(self, enc: StreamWriter, first: TextDelta | StreamDone, on_error: Callable[[Exception], WireError],
                 on_end: Callable[[int, float], Awaitable[None]], headers: dict[str, str]) -> StreamingResponse:
        """The SSE response of the whole stream (either door's encoder); when its body ends, however
        it ends, the router's stream is closed and `on_end(tokens, cost)` releases what the request held."""

        async def body() -> AsyncIterator[bytes]:
            tokens, cost = 0, 0.0
            try:
                async for chunk in self.encode(enc, first, on_error):
                    yield chunk
                if self.result is not None:
                    tokens, cost = self.result.input_tokens + self.result.output_tokens, self.result.cost_usd
            finally:
                await self.aclose()
                await on_end(tokens, cost)

        return _EventStream(body(), media_type="text/event-stream; charset=utf-8",
                            headers={"cache-control": "no-cache", **headers})


class _EventStream(StreamingResponse):
    """starlette's `StreamingResponse`, except that the head and the first chunk go out from the
    request's own task. starlette streams from a task it starts in a task group (with another
    that watches for the client leaving); starting it put ~0.1 ms between the first event and
    its bytes. The rest of the stream runs as starlette runs it, the watcher included."""

    _head_sent = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._head_sent = True
        try:
            first = await cast(AsyncIterator[bytes | str], self.body_iterator).__anext__()
        except StopAsyncIteration:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.body", "body": self._bytes(first), "more_body": True})
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        if not self._head_sent:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": self._bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _bytes(self, chunk: bytes | memoryview | str) -> bytes | memoryview:
        return chunk if isinstance(chunk, (bytes, memoryview)) else chunk.encode(self.charset)


def stream_events(router: Router, served: ServedModel, **kwargs: Any) -> RouterStream:
    """`router.stream(**kwargs)` wrapped as a `RouterStream`."""
    return RouterStream(router, served, **kwargs)
