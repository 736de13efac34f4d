"""The Chat Completions wire format, as pure functions shared by both OpenAI transports.

    chat_body(request, ...)     ours -> the request body (in the SDK's key order) + extra fields
    read_completion(data)       a `chat.completion` JSON object -> text, finish, tool calls, usage
    ChunkReader.read(chunk)     one `chat.completion.chunk` -> text and `ToolCallDelta`s (our indexes)

The SDK adapter hands the first to `client.chat.completions.create` and feeds the SDK's parsed
objects (as dicts) to the other two; the lean transport sends and reads the JSON itself. One
mapping, two wires: that is what keeps them byte-for-byte and result-for-result equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.base import Request, Usage
from adapters.conversation import NO_OPTIONS, Message, Options, OutputFormat, Tool, ToolCall, ToolCallDelta, ToolChoice

__all__ = [
    "FINISH",
    "OPENAI_OPTIONS",
    "SDK_BODY_ORDER",
    "ChatAnswer",
    "ChunkReader",
    "MalformedAnswer",
    "chat_body",
    "chat_messages",
    "read_completion",
    "sdk_arguments",
    "usage_of",
]

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}
"""OpenAI finish reasons -> ours (anything else is "other")."""

OPENAI_OPTIONS = frozenset({
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "top_p", "seed", "presence_penalty",
    "frequency_penalty", "user", "metadata",
})
"""Every `Options` field Chat Completions takes natively."""

# The order in which the SDK's `create()` writes the body (its dict literal, openai 1.x-3.x);
# the lean transport follows it so that both put the same bytes on the wire.
SDK_BODY_ORDER = (
    "model", "stream", "service_tier", "messages", "audio", "frequency_penalty", "function_call", "functions",
    "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed", "stop", "store",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
)
_SDK_FIELDS = frozenset(SDK_BODY_ORDER)


# -- ours -> OpenAI ------------------------------------------------------------------------


def chat_body(
    request: Request,
    model: str,
    *,
    max_tokens_field: str = "max_completion_tokens",
    send_temperature: bool = True,
    stream: bool = False,
    stream_usage: bool = True,
    seed_field: str = "seed",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body of `request`: (SDK fields in the SDK's order, extra body fields).

    Extra fields are the request's `extra_body` (already checked against the policy's
    pass-through list); they go last, as the SDK merges its `extra_body`. A `seed_field` other
    than "seed" (a compatible server's name for it) is an extra field too.
    """
    # written in SDK_BODY_ORDER directly (no sort on the hot path); a test asserts the order
    body: dict[str, Any] = {"model": model}
    if stream:
        body["stream"] = True
    body["messages"] = chat_messages(request.messages)
    extra: dict[str, Any] = {}
    opts = request.options
    plain = opts is NO_OPTIONS
    if not plain and opts.frequency_penalty is not None:
        body["frequency_penalty"] = opts.frequency_penalty
    if max_tokens_field in _SDK_FIELDS:
        body[max_tokens_field] = request.max_tokens
    else:  # a field the SDK does not know goes after the rest, as its extra_body would
        extra[max_tokens_field] = request.max_tokens
    if not plain:
        _middle(opts, body, extra, seed_field)
    if request.stop:
        body["stop"] = list(request.stop)
    if stream and stream_usage:
        body["stream_options"] = {"include_usage": True}
    if send_temperature:
        body["temperature"] = request.temperature
    if not plain:
        _tail(opts, body, extra)
    return body, extra


def _middle(opts: Options, body: dict[str, Any], extra: dict[str, Any], seed_field: str) -> None:
    if opts.metadata is not None:
        body["metadata"] = dict(opts.metadata)
    if opts.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = opts.parallel_tool_calls
    if opts.presence_penalty is not None:
        body["presence_penalty"] = opts.presence_penalty
    if opts.output is not None and opts.output.type != "text":
        body["response_format"] = response_format(opts.output)
    if opts.seed is not None:
        (body if seed_field == "seed" else extra)[seed_field] = opts.seed


def _tail(opts: Options, body: dict[str, Any], extra: dict[str, Any]) -> None:
    if opts.tool_choice is not None:
        body["tool_choice"] = tool_choice(opts.tool_choice)
    if opts.tools:
        body["tools"] = [tool(t) for t in opts.tools]
    if opts.top_p is not None:
        body["top_p"] = opts.top_p
    if opts.user is not None:
        body["user"] = opts.user
    if opts.extra_body:
        extra.update(opts.extra_body)


def chat_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages as Chat Completions messages (text stays a plain string)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m.content, str) and not m.tool_calls and m.role != "tool":  # the common case first
            out.append({"role": m.role, "content": m.content})
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
        elif m.role == "assistant" and m.tool_calls:
            out.append({
                "role": "assistant", "content": m.text or None,
                "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in m.tool_calls],
            })
        else:
            out.append({"role": m.role, "content": [_part(p) for p in m.content]})
    return out


def _part(p: Any) -> dict[str, Any]:
    if p.part_kind == "text":
        return {"type": "text", "text": p.text}
    image: dict[str, Any] = {"url": p.data_url}
    if p.detail is not None:
        image["detail"] = p.detail
    return {"type": "image_url", "image_url": image}


def tool(t: Tool) -> dict[str, Any]:
    """One tool definition."""
    fn: dict[str, Any] = {"name": t.name}
    if t.description:
        fn["description"] = t.description
    fn["parameters"] = dict(t.parameters)
    if t.strict is not None:
        fn["strict"] = t.strict
    return {"type": "function", "function": fn}


def tool_choice(c: ToolChoice) -> Any:
    """`auto` / `none` / `required`, or the named-function object."""
    if c.mode == "tool":
        return {"type": "function", "function": {"name": c.name}}
    return c.mode


def response_format(o: OutputFormat) -> dict[str, Any]:
    """`{"type": "json_object"}` or the `json_schema` object."""
    if o.type != "json_schema":
        return {"type": o.type}
    spec: dict[str, Any] = {"name": o.name or "response"}
    if o.description is not None:
        spec["description"] = o.description
    spec["schema"] = dict(o.schema or {})
    if o.strict is not None:
        spec["strict"] = o.strict
    return {"type": "json_schema", "json_schema": spec}


def sdk_arguments(body: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`create()` keyword arguments that make the SDK send `body` then `extra`."""
    args = dict(body)
    if extra:
        args["extra_body"] = dict(extra)
    return args


# -- OpenAI -> ours ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """What a `chat.completion` says, choice 0."""

    text: str | None
    finish: str | None
    refusal: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Any


class MalformedAnswer(ValueError):
    """The JSON is not a chat completion; the message says where."""


def read_completion(data: Any) -> ChatAnswer:
    """Choice 0 of a `chat.completion` object: text, finish reason, refusal, tool calls, usage.

    Tool-call arguments are kept as the JSON text OpenAI returned, unparsed.

    Raises:
        MalformedAnswer: no choices, or a shape that is not a chat completion.
    """
    if not isinstance(data, Mapping):
        raise MalformedAnswer(f"malformed response: {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not choices:
        raise MalformedAnswer("the response holds no choices")
    try:
        choice = choices[0]
        message = choice["message"]
        text, finish, refusal = message.get("content"), choice.get("finish_reason"), message.get("refusal")
        calls = _calls(message.get("tool_calls"))
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise MalformedAnswer(f"malformed response: {type(exc).__name__}: {exc}") from None
    if text is not None and not isinstance(text, str):
        raise MalformedAnswer(f"malformed response: message content is {type(text).__name__}")
    return ChatAnswer(text, finish, refusal, calls, data.get("usage"))


def _calls(raw: Any) -> tuple[ToolCall, ...]:
    if not raw:
        return ()
    out = []
    for c in raw:
        fn = c["function"]
        args = fn.get("arguments")
        out.append(ToolCall(str(c.get("id") or ""), str(fn["name"]), args if isinstance(args, str) else "{}"))
    return tuple(out)


def usage_of(finish: Any, usage: Any) -> Usage:
    """Our `Usage` from a finish reason and an OpenAI usage object (a dict, or None)."""
    reason = FINISH.get(finish if isinstance(finish, str) else "", "other")
    if not isinstance(usage, Mapping):
        return Usage(reason, None, None)
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(
        reason,
        prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else None,
        completion if isinstance(completion, int) and not isinstance(completion, bool) else None,
    )


class ChunkReader:
    """One stream's `chat.completion.chunk`s to our events, choice 0 only.

    Tool-call deltas are renumbered 0, 1, ... in order of first appearance (OpenAI's `index`
    usually is that already; a server that numbers otherwise still yields consistent indexes).
    """

    __slots__ = ("_index", "finish", "produced", "usage")

    def __init__(self) -> None:
        self._index: dict[Any, int] = {}
        self.finish: str | None = None
        self.usage: Any = None
        self.produced = False  # any text or tool-call delta so far

    def read(self, chunk: Mapping[str, Any]) -> list[str | ToolCallDelta]:
        """The text pieces and tool-call deltas of one chunk, in order; keeps finish and usage."""
        out: list[str | ToolCallDelta] = []
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    out.append(content)
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, Mapping):
                        out.append(self._delta(call))
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish = reason
        if out:
            self.produced = True
        return out

    def _delta(self, call: Mapping[str, Any]) -> ToolCallDelta:
        key = call.get("index", len(self._index))
        index = self._index.setdefault(key, len(self._index))
        fn = call.get("function")
        fn = fn if isinstance(fn, Mapping) else {}
        args = fn.get("arguments")
        return ToolCallDelta(index, call.get("id") or None, fn.get("name") or None,
                             args if isinstance(args, str) else "")


class SSEDecoder:
    """Server-sent events to their `data` payloads, as the SDK's decoder reads them.

    Lines end at CR, LF or CRLF only (`str.splitlines` would also split a JSON string holding
    U+2028). An event is dispatched at a blank line; events without data (a bare `event:` line)
    are skipped where the SDK would fail to parse their empty data.
    """

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        buf = self._buf + chunk
        trailing_cr = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # may be the first half of a CRLF split across reads
                buf, trailing_cr = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop() + trailing_cr
        events: list[str] = []
        for raw in lines:
            if not raw:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if raw.startswith(b"data:"):
                value = raw[5:].decode("utf-8")
                self._data.append(value[1:] if value.startswith(" ") else value)
            # other fields (event, id, retry) and comments carry nothing Chat Completions needs
        return events
