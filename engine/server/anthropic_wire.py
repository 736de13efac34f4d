"""Anthropic's Messages wire format: request validation, responses, SSE events, errors.

The front door `POST /v1/messages` speaks it so that the official `anthropic` SDK and
Anthropic-native tools can use the router, whatever vendor serves: a request is parsed into
the conversation model (`adapters.conversation`), the same `ChatRequest` the OpenAI door
makes, and the routed answer is written back in Anthropic's shapes:

    system, messages (text, image, tool_use, tool_result blocks)   -> Message(...)
    tools (input_schema), tool_choice (auto/any/tool/none)         -> Options.tools, tool_choice
    output_config.format (json_schema)                             -> Options.output
    stop_sequences, temperature, top_p, top_k, metadata.user_id    -> stop, temperature, top_p,
                                                                      extra_body, meta.user
    answer: content [text, tool_use], stop_reason (end_turn, max_tokens, tool_use, refusal)
    stream: message_start, content_block_start/delta/stop (text_delta, input_json_delta),
            message_delta (stop_reason, usage), message_stop; errors as `event: error`

Errors have Anthropic's shape: `{"type": "error", "error": {"type": ..., "message": ...}}`,
with its error types by status. A field the router cannot carry (thinking, server tools,
documents, ...) is a 400 naming it, never dropped; `cache_control` hints are accepted and have
no effect (the router keeps no vendor prompt cache).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from adapters.base import estimate_request_tokens
from adapters.conversation import (
    IMAGE_MEDIA_TYPES,
    ImagePart,
    Message,
    Options,
    OutputFormat,
    Part,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    coerce_messages,
    coerce_options,
    synth_call_id,
)
from adapters.errors import InvalidInput
from engine.runtime.result import RoutedCompletion
from engine.server.openai_wire import ChatRequest, WireError, invalid_input, parse_json_body

__all__ = [
    "MessageStreamEncoder",
    "count_tokens_body",
    "error_body",
    "message_body",
    "parse_count_tokens_request",
    "parse_messages_request",
    "stop_reason",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                422: "invalid_request_error", 429: "rate_limit_error", 500: "api_error", 503: "overloaded_error",
                529: "overloaded_error"}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}

_KNOWN = frozenset(("model", "messages", "max_tokens", "system", "tools", "tool_choice", "temperature", "top_p",
                    "top_k", "stop_sequences", "metadata", "stream", "output_config", "cache_control",
                    "service_tier"))
_REFUSED = {"thinking": "extended thinking", "container": "containers", "mcp_servers": "MCP servers",
            "context_management": "context management", "inference_geo": "inference geography",
            "speed": "speed selection", "diagnostics": "diagnostics"}
_BLOCKS_USER = ("text", "image", "tool_result")
_BLOCKS_ASSISTANT = ("text", "tool_use")


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(err: WireError) -> bytes:
    """Anthropic's error object for a refusal (the OpenAI-side `param` is in the message already)."""
    return _dumps({"type": "error", "error": {"type": error_type(err.status), "message": err.message}}).encode()


def _bad(path: str, message: str) -> WireError:
    return WireError(400, f"{path}: {message}", param=path, code="invalid_request_error")


def _unsupported(path: str, what: str) -> WireError:
    return WireError(400, f"{path}: {what} is not supported by this router; remove it from the request "
                     "(see docs/service.md, 'What the service accepts').", param=path, code="unsupported_parameter")


def _str(v: Any, path: str, *, required: bool = True) -> str | None:
    if v is None and not required:
        return None
    if not isinstance(v, str):
        raise _bad(path, "Input should be a valid string")
    return v


def _number(body: Mapping[str, Any], name: str, high: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(name, "Input should be a valid number")
    if not 0.0 <= v <= high:
        raise _bad(name, f"Input should be between 0 and {high:g}")
    return float(v)


# -- requests ------------------------------------------------------------------------------------


def parse_messages_request(raw: bytes) -> ChatRequest:
    """Validate a `POST /v1/messages` body as Anthropic would, into the router's request.

    Raises:
        WireError: 400 naming the offending field (Anthropic's dotted path, e.g.
            `messages.1.content.0.source`).
    """
    body = parse_json_body(raw)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _bad("max_tokens", "Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens", "Input should be an integer greater than or equal to 1")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "Input should be a valid boolean")
    return _request(body, max_tokens=max_tokens, stream=stream)


def parse_count_tokens_request(raw: bytes) -> ChatRequest:
    """Validate a `POST /v1/messages/count_tokens` body (a messages body without max_tokens)."""
    body = parse_json_body(raw)
    for k in ("max_tokens", "stream", "stop_sequences", "temperature", "top_p", "top_k", "metadata"):
        if k in body:
            raise _bad(k, "Extra inputs are not permitted")
    return _request(body, max_tokens=1, stream=False)


def _request(body: Mapping[str, Any], *, max_tokens: int, stream: bool) -> ChatRequest:
    unknown = [k for k in body if k not in _KNOWN and k not in _REFUSED]
    if unknown:
        raise _bad(unknown[0], "Extra inputs are not permitted")
    for name, what in _REFUSED.items():
        if body.get(name) is not None:
            raise _unsupported(name, what)
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _bad("service_tier", "Input should be 'auto' or 'standard_only'")
    model = body.get("model")
    if model is None:
        raise _bad("model", "Field required")
    if not isinstance(model, str) or not model:
        raise _bad("model", "Input should be a non-empty string: \"auto\", a model or a route name of the policy")
    messages = _conversation(body)
    temperature = _number(body, "temperature", 1.0)
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _bad("stop_sequences", "Input should be a valid list of strings")
    user = _metadata_user(body.get("metadata"))
    return ChatRequest(model=model, messages=messages, max_tokens=max_tokens,
                       temperature=1.0 if temperature is None else temperature, stop=tuple(stop), stream=stream,
                       include_usage=True, user=user, metadata={}, options=_options(body))


def _metadata_user(md: Any) -> str | None:
    if md is None:
        return None
    if not isinstance(md, dict):
        raise _bad("metadata", "Input should be a valid dictionary")
    for k in md:
        if k != "user_id":
            raise _bad(f"metadata.{k}", "Extra inputs are not permitted")
    return _str(md.get("user_id"), "metadata.user_id", required=False)


def _system(raw: Any) -> Message | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return Message("system", raw) if raw else None
    if not isinstance(raw, list):
        raise _bad("system", "Input should be a valid string or a list of text blocks")
    texts = []
    for i, b in enumerate(raw):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise _bad(f"system.{i}", "Input should be a text block")
        texts.append(_str(b.get("text"), f"system.{i}.text") or "")
    text = "\n\n".join(t for t in texts if t)
    return Message("system", text) if text else None


def _conversation(body: Mapping[str, Any]) -> tuple[Message, ...]:
    raw = body.get("messages")
    if raw is None:
        raise _bad("messages", "Field required")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "Input should be a non-empty list")
    out: list[Message] = []
    system = _system(body.get("system"))
    if system is not None:
        out.append(system)
    names: dict[str, str] = {}  # tool_use id -> tool name, for the results that answer them
    for i, m in enumerate(raw):
        out.extend(_message(m, f"messages.{i}", names))
    try:
        return coerce_messages(out)
    except InvalidInput as e:
        raise invalid_input(e, "messages", ("messages",)) from None


def _message(m: Any, where: str, names: dict[str, str]) -> list[Message]:
    if not isinstance(m, dict):
        raise _bad(where, "Input should be a valid dictionary")
    for k in m:
        if k not in ("role", "content"):
            raise _bad(f"{where}.{k}", "Extra inputs are not permitted")
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"{where}.role", "Input should be 'user' or 'assistant'")
    content = m.get("content")
    if isinstance(content, str):
        return [Message(role, content)]
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "Input should be a valid string or a list of content blocks")
    allowed = _BLOCKS_USER if role == "user" else _BLOCKS_ASSISTANT
    parts: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, b in enumerate(content):
        at = f"{where}.content.{j}"
        if not isinstance(b, dict):
            raise _bad(at, "Input should be a valid dictionary")
        kind = _block_type(b, at, allowed, role)
        if kind == "text":
            parts.append(TextPart(_str(b.get("text"), f"{at}.text") or ""))
        elif kind == "image":
            parts.append(_image(b.get("source"), f"{at}.source"))
        elif kind == "tool_use":
            calls.append(_tool_use(b, at, names))
        else:
            results.append(_tool_result(b, at, names))
    if role == "assistant":
        text = "".join(p.text for p in parts if isinstance(p, TextPart))
        return [Message("assistant", text, tuple(calls))]
    # a user turn may answer tool calls and say more: the results first, as Anthropic requires
    if parts and any(isinstance(p, ImagePart) or p.text.strip() for p in parts):
        results.append(Message("user", tuple(parts)))
    if not results:
        raise _bad(f"{where}.content", "a user message needs a text, image or tool_result block")
    return results


def _block_type(b: Mapping[str, Any], at: str, allowed: tuple[str, ...], role: str) -> str:
    kind = b.get("type")
    if kind not in allowed:
        if kind in ("document", "thinking", "redacted_thinking", "search_result", "server_tool_use",
                    "web_search_tool_result", "container_upload"):
            raise _unsupported(f"{at}.type", f"a {kind!r} block")
        raise _bad(f"{at}.type", f"Input should be one of {', '.join(repr(a) for a in allowed)} in a {role} "
                   "message")
    return str(kind)


def _image(src: Any, at: str) -> ImagePart:
    if not isinstance(src, dict):
        raise _bad(at, "Input should be an image source (base64 or url)")
    kind = src.get("type")
    if kind == "base64":
        data, mt = _str(src.get("data"), f"{at}.data"), (_str(src.get("media_type"), f"{at}.media_type") or "").lower()
        if mt not in IMAGE_MEDIA_TYPES:
            raise _bad(f"{at}.media_type", f"Input should be one of {', '.join(sorted(IMAGE_MEDIA_TYPES))}")
        try:
            base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"{at}.data", "Input is not valid base64") from None
        return ImagePart(data=data, media_type=mt)
    if kind == "url":
        url = _str(src.get("url"), f"{at}.url") or ""
        if not url.startswith(("http://", "https://")):
            raise _bad(f"{at}.url", "Input should be an http(s) URL")
        return ImagePart(url=url)
    if kind == "file":
        raise _unsupported(f"{at}.type", "an image by Files API id")
    raise _bad(f"{at}.type", "Input should be 'base64' or 'url'")


def _tool_use(b: Mapping[str, Any], at: str, names: dict[str, str]) -> ToolCall:
    cid, name, args = b.get("id"), b.get("name"), b.get("input", {})
    if not isinstance(cid, str) or not cid:
        raise _bad(f"{at}.id", "Field required")
    if not isinstance(name, str) or not name:
        raise _bad(f"{at}.name", "Field required")
    if not isinstance(args, dict):
        raise _bad(f"{at}.input", "Input should be a valid dictionary")
    names[cid] = name
    return ToolCall(cid, name, _dumps(args))


def _tool_result(b: Mapping[str, Any], at: str, names: dict[str, str]) -> Message:
    cid = b.get("tool_use_id")
    if not isinstance(cid, str) or not cid:
        raise _bad(f"{at}.tool_use_id", "Field required")
    raw = b.get("content", "")
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, list):
        texts = []
        for k, part in enumerate(raw):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else None
                raise _unsupported(f"{at}.content.{k}.type", f"a {kind!r} block in a tool result (text only)")
            texts.append(_str(part.get("text"), f"{at}.content.{k}.text") or "")
        text = "\n".join(texts)
    else:
        raise _bad(f"{at}.content", "Input should be a valid string or a list of text blocks")
    if b.get("is_error") is True:
        text = f"Error: {text}"  # other vendors have no error flag on a tool result; the text carries it
    return Message("tool", text, tool_call_id=cid, name=names.get(cid))


def _options(body: Mapping[str, Any]) -> Options:
    tools_raw = body.get("tools")
    tools: list[Tool] | None = None
    if tools_raw is not None:
        if not isinstance(tools_raw, list):
            raise _bad("tools", "Input should be a valid list")
        tools = [_tool(t, f"tools.{i}") for i, t in enumerate(tools_raw)]
    choice, parallel = _tool_choice(body.get("tool_choice"))
    output = _output(body.get("output_config"))
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise _bad("top_k", "Input should be a non-negative integer")
    try:
        return coerce_options(tools=tools, tool_choice=choice, parallel_tool_calls=parallel,
                              response_format=output, top_p=_number(body, "top_p", 1.0),
                              extra_body={"top_k": top_k} if top_k is not None else None)
    except InvalidInput as e:
        raise invalid_input(e, "tools", ("tools", "tool_choice", "response_format", "top_p")) from None


def _tool(t: Any, at: str) -> Tool:
    if not isinstance(t, dict):
        raise _bad(at, "Input should be a valid dictionary")
    kind = t.get("type")
    if kind not in (None, "custom"):
        raise _unsupported(f"{at}.type", f"the server tool {kind!r} (only client tools with input_schema)")
    for k in t:
        if k not in ("name", "description", "input_schema", "cache_control", "type", "strict"):
            raise _bad(f"{at}.{k}", "Extra inputs are not permitted")
    name = _str(t.get("name"), f"{at}.name") or ""
    schema = t.get("input_schema")
    if not isinstance(schema, dict):
        raise _bad(f"{at}.input_schema", "Field required (a JSON Schema object)")
    desc = _str(t.get("description"), f"{at}.description", required=False) or ""
    strict = t.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise _bad(f"{at}.strict", "Input should be a valid boolean")
    return Tool(name, desc, schema, strict)


def _tool_choice(c: Any) -> tuple[ToolChoice | None, bool | None]:
    if c is None:
        return None, None
    if not isinstance(c, dict):
        raise _bad("tool_choice", "Input should be a valid dictionary")
    kind = c.get("type")
    parallel = c.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean")
    no_parallel = False if parallel else None
    if kind == "auto":
        return ToolChoice("auto"), no_parallel
    if kind == "any":
        return ToolChoice("required"), no_parallel
    if kind == "none":
        return ToolChoice("none"), None
    if kind == "tool":
        name = c.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.name", "Field required")
        return ToolChoice.tool(name), no_parallel
    raise _bad("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")


def _output(cfg: Any) -> OutputFormat | None:
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise _bad("output_config", "Input should be a valid dictionary")
    for k in cfg:
        if k == "effort":
            raise _unsupported("output_config.effort", "effort")
        if k != "format":
            raise _bad(f"output_config.{k}", "Extra inputs are not permitted")
    fmt = cfg.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _bad("output_config.format", "Input should be {\"type\": \"json_schema\", \"schema\": {...}}")
    return OutputFormat("json_schema", "output", fmt["schema"])


# -- responses -----------------------------------------------------------------------------------


def stop_reason(reason: str) -> str:
    """Anthropic's stop_reason for the router's finish reason."""
    return _STOP.get(reason, "end_turn")


def _tool_input(c: ToolCall) -> dict[str, Any]:
    try:
        return c.args()
    except ValueError:
        raise WireError(502, f"Model produced arguments for tool {c.name!r} that are not a JSON object: "
                        f"{c.arguments[:200]!r}", type="server_error", code="bad_tool_arguments") from None


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": output_tokens}


def message_body(result: RoutedCompletion) -> bytes:
    """A `message` object for a served request; `model` is the policy's model name."""
    content: list[dict[str, Any]] = []
    if result.text:
        content.append({"type": "text", "text": result.text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c)}
                for c in result.tool_calls]
    return _dumps({"id": f"msg_{result.request_id}", "type": "message", "role": "assistant", "model": result.model,
                   "content": content, "stop_reason": stop_reason(result.finish_reason), "stop_sequence": None,
                   "usage": _usage(result.input_tokens, result.output_tokens)}).encode()


def count_tokens_body(chat: ChatRequest) -> bytes:
    """`{"input_tokens": N}`: the router's estimate (the vendor that would serve is not asked)."""
    return _dumps({"input_tokens": estimate_request_tokens(chat.messages, chat.options)}).encode()


def _event(name: str, data: Mapping[str, Any]) -> str:
    return f"event: {name}\ndata: {_dumps(data)}\n\n"


class MessageStreamEncoder:
    """Server-sent events of one streamed message, in Anthropic's event sequence.

    Content blocks are sequential on this wire: a text block or a tool_use block is opened,
    filled and closed before the next one starts; tool-call deltas (OpenAI-style, by index)
    become tool_use blocks with `input_json_delta` fragments.
    """

    __slots__ = ("_block", "_closed_calls", "_current", "_input_tokens", "_message_id", "_model")

    def __init__(self, message_id: str, model: str, *, input_tokens: int) -> None:
        self._message_id = message_id
        self._model = model
        self._input_tokens = input_tokens
        self._block = -1  # index of the open content block; -1 before the first
        self._current: str | int | None = None  # "text", a tool-call index, or None (no open block)
        self._closed_calls: set[int] = set()

    def first(self, text: str) -> bytes:
        """`message_start` and `ping`, then the first text (if any)."""
        message: dict[str, Any] = {"id": self._message_id, "type": "message", "role": "assistant", "model": self._model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": _usage(self._input_tokens, 1)}
        out = _event("message_start", {"type": "message_start", "message": message})
        out += _event("ping", {"type": "ping"})
        return (out + self._text(text)).encode() if text else out.encode()

    def delta(self, text: str) -> bytes:
        """A `text_delta` (opening a text block when none is open)."""
        return self._text(text).encode()

    def _text(self, text: str) -> str:
        out = ""
        if self._current != "text":
            out += self._close()
            out += self._open({"type": "text", "text": ""}, "text")
        return out + _event("content_block_delta", {"type": "content_block_delta", "index": self._block,
                                                    "delta": {"type": "text_delta", "text": text}})

    def tool_call(self, d: ToolCallDelta) -> bytes:
        """A tool call's `content_block_start` (id, name) or an `input_json_delta` fragment."""
        out = ""
        if self._current != d.index:
            if d.index in self._closed_calls:
                raise ValueError(f"tool call {d.index} continued after its block was closed")
            out += self._close()
            name = d.name or ""
            out += self._open({"type": "tool_use", "id": d.id or synth_call_id(name, d.index, self._message_id),
                               "name": name, "input": {}}, d.index)
        if d.arguments:
            out += _event("content_block_delta", {"type": "content_block_delta", "index": self._block,
                                                  "delta": {"type": "input_json_delta", "partial_json": d.arguments}})
        return out.encode()

    def _open(self, block: Mapping[str, Any], what: str | int) -> str:
        self._block += 1
        self._current = what
        return _event("content_block_start", {"type": "content_block_start", "index": self._block,
                                              "content_block": block})

    def _close(self) -> str:
        if self._current is None:
            return ""
        if isinstance(self._current, int):
            self._closed_calls.add(self._current)
        self._current = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._block})

    def end(self, reason: str, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The last block's stop, `message_delta` (stop_reason, usage) and `message_stop`."""
        out = self._close()
        out += _event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": stop_reason(reason), "stop_sequence": None},
                                        "usage": _usage(prompt_tokens, completion_tokens)})
        return (out + _event("message_stop", {"type": "message_stop"})).encode()

    @staticmethod
    def error(err: WireError) -> bytes:
        """An `error` event, as Anthropic sends one mid-stream (the SDK raises on it)."""
        return b"event: error\ndata: " + error_body(err) + b"\n\n"
