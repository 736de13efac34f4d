"""The adapter interface: values, the `LLMAdapter` ABC, and the flow every adapter shares.

The base class owns the flow (validate the caller's input before any network call, time the
call, map errors at one choke point, settle usage and cost); a subclass only translates:
`_complete` / `_stream` build the vendor request and parse its answer into `Reply` / `Usage`,
and `_translate_error` maps one vendor exception onto `adapters.errors`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal

from adapters.conversation import (
    NO_OPTIONS,
    Message,
    Options,
    Role,
    ToolCall,
    ToolCallAccumulator,
    ToolCallDelta,
    coerce_messages,
    options_of,
)
from adapters.errors import (
    AdapterError,
    AuthError,
    BadRequest,
    ConnectionFailed,
    InvalidInput,
    ProviderError,
    ServerError,
    Timeout,
    scrub,
)
from adapters.tokens import estimate_messages_tokens, estimate_tokens

__all__ = [
    "Completion",
    "LLMAdapter",
    "Message",
    "Price",
    "Reply",
    "Request",
    "Role",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD cost of a call with these token counts."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished completion, as the router sees it whatever the vendor.

    Attributes:
        text: The generated text ("" when the model only called tools).
        model: The vendor model id that was called.
        provider: The provider name given by the caller.
        finish_reason: "stop" (natural end or stop sequence), "length" (max_tokens reached),
            "tool_calls" (the model called tools), "content_filter", or "other".
        input_tokens: Input tokens as reported by the vendor (estimated when it does not say).
        output_tokens: Output tokens, likewise.
        latency_ms: Wall time of the call inside the adapter, SDK included.
        cost_usd: From the adapter's price; 0.0 when no price is configured.
        tool_calls: The tool calls the model made, in order (arguments as JSON text).
    """

    text: str
    model: str
    provider: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of streamed text, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Last event of a stream: the assembled completion with the vendor's usage."""

    completion: Completion


StreamEvent = TextDelta | ToolCallDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class Request:
    """The caller's request after validation; what subclasses translate."""

    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    timeout_s: float
    options: Options = NO_OPTIONS

    @property
    def system(self) -> str | None:
        """All system messages joined by blank lines, or None (vendors that take one system text)."""
        parts = [m.text for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None

    @property
    def turns(self) -> tuple[Message, ...]:
        """The user, assistant and tool messages, in order."""
        return tuple(m for m in self.messages if m.role != "system")


@dataclass(frozen=True, slots=True)
class Usage:
    """How a vendor call ended: finish reason and token counts (None when the vendor did not say)."""

    finish_reason: str
    input_tokens: int | None
    output_tokens: int | None


@dataclass(frozen=True, slots=True)
class Reply:
    """A vendor's non-streaming answer, translated."""

    text: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()


class LLMAdapter(ABC):
    """One provider's model behind one interface.

    Attributes:
        provider: Provider name given by the caller (e.g. "openai", "sim-openai").
        model: The vendor's model id.
        price: USD per million tokens, or None (cost reported as 0.0).
        timeout_s: Default timeout of one attempt, in seconds.
    """

    kind: ClassVar[str]
    """Registry name of the adapter (openai, anthropic, ...)."""
    max_temperature: ClassVar[float] = 2.0
    """Upper bound of the vendor's temperature range (the lower bound is 0)."""
    max_stop_sequences: ClassVar[int | None] = None
    """How many stop sequences the vendor accepts, None if unbounded."""
    supports_streaming: ClassVar[bool] = True
    """Whether `stream` is available."""
    keeps_deadline: ClassVar[bool] = False
    """Whether `generate` always ends (answer or `Timeout`) within its `timeout_s` on its own. The
    router times a call of an adapter that does not with a backstop timer of its own (an SDK whose
    timeouts bound each read, not the whole call); one that does is spared that timer per call."""
    # plain attributes, not ClassVars: an instance may narrow them (an endpoint row, a simulated model)
    supported_options: frozenset[str] = frozenset()
    """Request options (`Options.asked()` names) this adapter maps natively; any other that a
    request sets is refused with `BadRequest` before the call, never silently dropped."""
    supports_images: bool = False
    """Whether image parts can be sent."""
    sdk_modules: ClassVar[tuple[str, ...]] = ()
    """Modules the adapter imports on first use (its SDK): a service imports them off the event
    loop before a policy goes live, so a first request never waits seconds for an import."""

    def __init__(self, provider: str, model: str, *, price: Price | None = None, timeout_s: float = 30.0) -> None:
        if not provider or not model:
            raise InvalidInput("an adapter needs a provider name and a model id")
        if not _positive(timeout_s):
            raise InvalidInput(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.provider = provider
        self.model = model
        self.price = price
        self.timeout_s = float(timeout_s)
        self._max_temperature = type(self).max_temperature  # per instance: compatible endpoints differ
        self._secrets: tuple[str, ...] = ()  # values scrubbed from every error message
        self.extra_body_fields: frozenset[str] = frozenset()  # vendor body fields the policy lets through

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, model={self.model!r})"

    # ----------------------------------------------------------------- public API

    async def generate(
        self,
        prompt: str | None = None,
        max_tokens: int = 1000,
        temperature: float = 0.7,
        *,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        stop: Sequence[str] | None = None,
        timeout_s: float | None = None,
        options: Options | None = None,
        **surface: Any,
    ) -> Completion:
        """Complete a prompt or a conversation.

        Args:
            prompt: A single user message; exactly one of `prompt` and `messages` is given.
            max_tokens: Upper bound of generated tokens (> 0).
            temperature: Sampling temperature, within the vendor's range.
            messages: A conversation: `Message`s or OpenAI-shaped dicts (system, user,
                assistant turns with tool calls, tool results; text and image parts).
            stop: Sequences that end the generation.
            timeout_s: Timeout of this attempt; defaults to the adapter's `timeout_s`.
            options: Tools, output format and sampling as one `Options`; or give them as
                keywords (`tools`, `tool_choice`, `parallel_tool_calls`, `response_format`,
                `top_p`, `seed`, `presence_penalty`, `frequency_penalty`, `user`,
                `metadata`, `extra_body`) in OpenAI's shapes.

        Returns:
            The completion with usage, latency and cost.

        Raises:
            InvalidInput: The arguments are unusable; nothing was sent.
            ProviderError: One of its subclasses, whatever the vendor's failure.
        """
        request = self._prepare(prompt, max_tokens, temperature, messages, stop, timeout_s,
                                options_of(options, surface))
        with self._map_errors():
            self._warm()
            started = time.perf_counter()
            reply = await self._complete(request)
        return self._settle(request, reply.text, reply.usage, started, reply.tool_calls)

    def stream(
        self,
        prompt: str | None = None,
        max_tokens: int = 1000,
        temperature: float = 0.7,
        *,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        stop: Sequence[str] | None = None,
        timeout_s: float | None = None,
        options: Options | None = None,
        **surface: Any,
    ) -> AsyncIterator[StreamEvent]:
        """Stream a completion: `TextDelta`s and `ToolCallDelta`s in order, then one `StreamEnd`.

        Arguments as for `generate`; they are validated here, before iteration starts.
        A failure after some text was yielded raises the mapped `ProviderError` from the
        iteration (a cut stream is a `ServerError`).
        """
        if not self.supports_streaming:
            raise InvalidInput(f"streaming is not supported by the {self.kind} adapter")
        request = self._prepare(prompt, max_tokens, temperature, messages, stop, timeout_s,
                                options_of(options, surface))
        return self._run_stream(request)

    async def probe(self, *, timeout_s: float | None = None) -> None:
        """Check that this model can be called, without generating anything: the credentials,
        the connection and the model id, with the vendor's cheapest call (retrieving the model,
        which is free), for `engine doctor`.

        Raises:
            ProviderError: what a request would raise (`AuthError`, `ConnectionFailed`, `Timeout`;
                `BadRequest` with status 404 when the vendor does not know the model id).
            InvalidInput: the adapter has no such call.
        """
        import asyncio

        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._map_errors():
            self._warm()
            await asyncio.wait_for(self._probe(timeout), timeout)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters own a client to close
        """Release the adapter's client and connections."""

    # ------------------------------------------------------------- subclass hooks

    def _warm(self) -> None:  # noqa: B027 - optional hook
        """Create the SDK client if needed (first use imports the SDK); kept out of latency_ms."""

    async def _probe(self, timeout_s: float) -> None:
        """Call the vendor's cheapest authenticated endpoint naming this model (see `probe`)."""
        raise InvalidInput(f"the {self.kind} adapter cannot be probed")

    @abstractmethod
    async def _complete(self, request: Request) -> Reply:
        """Call the vendor once, non-streaming."""

    @abstractmethod
    def _stream(self, request: Request) -> AsyncIterator[str | ToolCallDelta | Usage]:
        """Call the vendor once, streaming: yield text pieces and tool-call deltas (indexes
        0, 1, ... in order of first appearance), then exactly one `Usage`."""

    @abstractmethod
    def _translate_error(self, exc: Exception) -> ProviderError | None:
        """Map one vendor exception, or return None when it is not the vendor's."""

    # ------------------------------------------------------------------- shared flow

    def _error(
        self,
        cls: type[ProviderError],
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> ProviderError:
        """Build an error of this adapter, its message scrubbed of secrets."""
        return cls(
            scrub(message, self._secrets), provider=self.provider, model=self.model, status=status,
            retry_after=retry_after,
        )

    def _map_errors(self) -> _VendorErrors:
        """The adapter's one choke point: every vendor exception leaves as a `ProviderError` (cause kept).

        Exceptions that are not the vendor's (bugs, cancellation) pass through unchanged.
        """
        return _VendorErrors(self)

    def _key_or_env(self, explicit: str | None, *env_vars: str, required: bool = True) -> str | None:
        """The configured API key, else the first of `env_vars` that is set; kept as a secret to scrub.

        Raises:
            AuthError: none is set and the vendor needs one (checked before any network call).
        """
        key = explicit or next((v for v in map(os.environ.get, env_vars) if v), None)
        if key:
            self._secrets = tuple({*self._secrets, key})
            return key
        if required:
            where = f"set {env_vars[0]} or " if env_vars else ""
            raise self._error(AuthError, f"no API key: {where}give api_key in the provider's configuration")
        return None

    def _scrub_cause(self, exc: Exception) -> None:
        """Mask secrets in the SDK exception kept as `__cause__`: tracebacks print its message."""
        if exc.args and any(isinstance(a, str) for a in exc.args):
            exc.args = tuple(scrub(a, self._secrets) if isinstance(a, str) else a for a in exc.args)
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            try:
                exc.message = scrub(message, self._secrets)  # type: ignore[attr-defined]
            except AttributeError:  # read-only on some exception types
                pass

    def _connection_error(self, exc: BaseException) -> ProviderError:
        """A failure on the way to the vendor: `ConnectionFailed` when no connection was made
        (DNS, refused, TLS), else `ServerError` (the connection was cut). The message is short
        and names the cause; never an object repr (an SSL context, a socket) from the chain."""
        cause = connection_cause(exc)
        if cause is not None:
            return self._error(ConnectionFailed, f"cannot reach the vendor: {cause}")
        return self._error(ServerError, f"connection cut: {type(exc).__name__}")

    def _translate_transport(self, exc: Exception) -> ProviderError | None:
        """Errors below the SDKs: httpx/httpx2 transport errors, sockets, malformed JSON."""
        for name in ("httpx2", "httpx"):
            mod = sys.modules.get(name)
            if mod is None:
                continue
            if isinstance(exc, mod.TimeoutException):
                return self._error(Timeout, f"timed out: {type(exc).__name__}")
            if isinstance(exc, mod.RequestError):  # transport failures, undecodable bodies
                return self._connection_error(exc)
        # google-genai switches to aiohttp when it is installed: map its transport errors too
        aiohttp = sys.modules.get("aiohttp")
        if aiohttp is not None:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                return self._error(Timeout, f"timed out: {type(exc).__name__}")
            if isinstance(exc, aiohttp.ClientError):
                return self._connection_error(exc)
        if isinstance(exc, TimeoutError):
            return self._error(Timeout, "timed out")
        if isinstance(exc, OSError):
            return self._connection_error(exc)
        if isinstance(exc, json.JSONDecodeError):
            return self._error(ServerError, f"malformed JSON from the vendor: {exc}")
        return None

    async def _run_stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        parts: list[str] = []
        calls = ToolCallAccumulator()
        usage: Usage | None = None
        with self._map_errors():
            self._warm()
            started = time.perf_counter()
            async with aclosing(self._stream(request)) as upstream:  # type: ignore[type-var]
                async for item in upstream:
                    if isinstance(item, str):
                        if item:
                            parts.append(item)
                            yield TextDelta(item)
                    elif isinstance(item, ToolCallDelta):
                        calls.add(item)
                        yield item
                    else:
                        usage = item
        if usage is None:
            # the connection closed cleanly but before the vendor's final event
            raise self._error(ServerError, "stream ended before the vendor's final event")
        yield StreamEnd(self._settle(request, "".join(parts), usage, started, calls.calls()))

    def _settle(self, request: Request, text: str, usage: Usage, started: float,
                tool_calls: tuple[ToolCall, ...] = ()) -> Completion:
        latency_ms = (time.perf_counter() - started) * 1000.0
        input_tokens = usage.input_tokens
        if input_tokens is None:
            input_tokens = estimate_request_tokens(request.messages, request.options)
        output_tokens = usage.output_tokens
        if output_tokens is None:
            output_tokens = estimate_tokens(text) + sum(estimate_tokens(c.name + c.arguments) for c in tool_calls)
        cost = self.price.cost(input_tokens, output_tokens) if self.price is not None else 0.0
        return Completion(
            text, self.model, self.provider, usage.finish_reason, input_tokens, output_tokens, latency_ms, cost,
            tool_calls,
        )

    def _check_options(self, request: Request) -> None:
        """Refuse, before any call, what this adapter cannot honour (named, with the model)."""
        opts = request.options
        if opts is not NO_OPTIONS:
            for name in opts.asked():
                if name not in self.supported_options and name not in self.extra_body_fields:
                    what = "is not a body field the policy lets through" if opts.extra_body and \
                        name in opts.extra_body else "is not supported"
                    raise self._error(BadRequest, f"{name} {what} by {self.kind} model {self.model}")
        if not self.supports_images and any(m.images for m in request.messages):
            raise self._error(BadRequest, f"image input is not supported by {self.kind} model {self.model}")

    def _prepare(
        self,
        prompt: str | None,
        max_tokens: int,
        temperature: float,
        messages: Sequence[Message | Mapping[str, Any]] | None,
        stop: Sequence[str] | None,
        timeout_s: float | None,
        options: Options = NO_OPTIONS,
    ) -> Request:
        """Validate the caller's arguments; raise `InvalidInput` naming the first problem
        (`BadRequest` for an option this vendor cannot honour)."""
        if (prompt is None) == (messages is None):
            raise InvalidInput("pass exactly one of `prompt` or `messages`")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InvalidInput(f"prompt must be a string, got {type(prompt).__name__}")
            if not prompt.strip():
                raise InvalidInput("prompt is empty or whitespace only")
            msgs: tuple[Message, ...] = (Message("user", prompt),)
        else:
            msgs = coerce_messages(messages)  # a router's `Conversation` as it is
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise InvalidInput(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not 0.0 <= temperature <= self._max_temperature
        ):
            raise InvalidInput(
                f"temperature must be between 0 and {self._max_temperature:g} for {self.kind}, got {temperature!r}"
            )
        stops = _check_stop(stop, self.max_stop_sequences, self.kind)
        if timeout_s is None:
            timeout_s = self.timeout_s
        elif not _positive(timeout_s):
            raise InvalidInput(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        request = Request(msgs, max_tokens, float(temperature), stops, float(timeout_s), options)
        self._check_options(request)
        return request


class _VendorErrors:
    """`LLMAdapter._map_errors()`: a plain context manager, which every call enters (a
    generator-based one costs a generator and its frames per call)."""

    __slots__ = ("_adapter",)

    def __init__(self, adapter: LLMAdapter) -> None:
        self._adapter = adapter

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, AdapterError):
            return False
        adapter = self._adapter
        mapped = adapter._translate_error(exc) or adapter._translate_transport(exc)
        if mapped is None:
            return False
        adapter._scrub_cause(exc)
        raise mapped from exc


def connection_cause(exc: BaseException) -> str | None:
    """Why no connection was made, in a few words, or None when one was (and then cut).

    Walks the exception chain (SDK error -> httpx/aiohttp -> socket error) for the first
    resolver, refusal or TLS failure.
    """
    import errno
    import socket
    import ssl

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        if isinstance(e, socket.gaierror) or "DNS" in name or "NameResolution" in name:
            return "the host name does not resolve (DNS)"
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, ssl.SSLError) or "SSL" in name or "Certificate" in name:
            return "TLS handshake failed"
        if name in ("ConnectError", "ClientConnectorError") and e.__cause__ is None and e.__context__ is None:
            return "could not connect"
        if isinstance(e, OSError) and e.errno is not None and name not in ("ConnectionResetError", "BrokenPipeError"):
            return f"could not connect ({e.strerror or 'OS error'})"
        e = e.__cause__ or e.__context__
    return None


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def estimate_request_tokens(messages: Sequence[Message], options: Options = NO_OPTIONS) -> int:
    """Estimated input tokens: message texts, tool calls and results, tool schemas, images."""
    texts: list[str] = []
    for m in messages:
        texts.append(m.text)
        texts.extend(c.name + c.arguments for c in m.tool_calls)
    total = estimate_messages_tokens(texts)
    # vendors bill an image by its size; without decoding it, a mid-size image's cost is the honest guess
    total += sum(_IMAGE_TOKENS for m in messages for _ in m.images)
    if options.tools:
        total += estimate_tokens(json.dumps([[t.name, t.description, t.parameters] for t in options.tools]))
    if options.output is not None and options.output.schema is not None:
        total += estimate_tokens(json.dumps(options.output.schema))
    return total


_IMAGE_TOKENS = 765


def _check_stop(stop: Sequence[str] | None, limit: int | None, kind: str) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise InvalidInput(f"stop sequences must be non-empty strings, got {s!r}")
    if limit is not None and len(stops) > limit:
        raise InvalidInput(f"{kind} accepts at most {limit} stop sequences, got {len(stops)}")
    return stops
