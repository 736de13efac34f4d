"""A routed stream as OpenAI server-sent events, and which model is serving it.

`Router.stream` yields text and, at the end, the whole result; the first chunk on the wire
must already name the model, and fallback may have moved past the plan's first model by
then. `TaggingPool` is the router's adapter pool with one addition: when the dispatcher asks
it for a model's adapter it notes the model in the `ServedModel` of the request being
streamed, so by the time the first token arrives the box names the model that produced it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any, cast

import anyio
from typing_extensions import override

from adapters.base import LLMAdapter, TextDelta
from engine.policy.model import Model
from engine.runtime.adapters import AdapterPool
from engine.runtime.result import RoutedCompletion, StreamDone
from engine.runtime.router import Router
from engine.server.openai_wire import StreamEncoder, WireError

__all__ = ["RouterStream", "ServedModel", "TaggingPool", "stream_events"]

_SERVED: ContextVar[ServedModel | None] = ContextVar("engine_server_served", default=None)


class ServedModel:
    """Filled in while a stream starts: the model whose attempt is running, and the completion id."""

    __slots__ = ("completion_id", "model")

    def __init__(self) -> None:
        self.model: str | None = None
        self.completion_id = uuid.uuid4().hex


class TaggingPool(AdapterPool):
    """The router's adapter pool, telling the current stream which model it asked for."""

    @override
    def get(self, model: Model) -> LLMAdapter:
        # The dispatcher runs each attempt in a task of its own (asyncio.wait_for), with a copy
        # of the context: the box is shared by reference, so the note reaches the caller.
        box = _SERVED.get()
        if box is not None:
            box.model = model.name
        return super().get(model)


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
        if self._served is None:
            return await self._events.__anext__()
        token = _SERVED.set(self._served)  # only the attempts before the first token can change models
        try:
            return await self._events.__anext__()
        finally:
            _SERVED.reset(token)
            self._served = None

    async def encode(self, enc: StreamEncoder, first: TextDelta | StreamDone,
                     on_error: Callable[[Exception], WireError]) -> AsyncIterator[bytes]:
        """The SSE bytes of the whole stream, from its first event on.

        A failure after the first chunk cannot change the HTTP status any more; it is sent as
        an error event (OpenAI's shape, which the SDKs raise as an APIError) and ends the stream.
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


def stream_events(router: Router, served: ServedModel, **kwargs: Any) -> RouterStream:
    """`router.stream(**kwargs)` wrapped as a `RouterStream`."""
    return RouterStream(router, served, **kwargs)
