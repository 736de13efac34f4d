"""OpenAI's Chat Completions wire format: request validation, responses, SSE chunks, errors.

Validation follows what OpenAI itself answers: a JSON object, known fields only, each of the
type OpenAI documents, with its error shape (`{"error": {message, type, param, code}}`) and
codes (`invalid_type`, `missing_required_parameter`, `unknown_parameter`, ...). Fields the
router cannot honour (tools, n > 1, JSON mode, logprobs) are refused with a message saying so
rather than silently dropped; sampling knobs that only tune a vendor's decoding (top_p,
penalties, seed) are accepted and not forwarded (see docs/service.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.runtime.result import RoutedCompletion

__all__ = [
    "ChatRequest",
    "StreamEncoder",
    "WireError",
    "completion_body",
    "error_body",
    "models_body",
    "parse_chat_request",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class WireError(Exception):
    """A request the service refuses, with the HTTP status and OpenAI's error fields.

    Attributes:
        status: HTTP status code.
        message: human-readable reason, saying how to fix it.
        type: OpenAI error type (`invalid_request_error`, `authentication_error`, ...).
        param: the offending parameter, if any.
        code: OpenAI error code, if any.
        headers: extra response headers (e.g. Retry-After).
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        """The JSON error body."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    """OpenAI's error object, encoded."""
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """A validated `POST /v1/chat/completions` body, reduced to what the router takes.

    Attributes:
        model: `auto`, a model name or a route name.
        messages: (role, content) pairs; `developer` is folded into `system`.
        max_tokens: output budget (`max_completion_tokens` or `max_tokens`, else the default).
        temperature: sampling temperature.
        stop: stop sequences.
        stream: answer as server-sent events.
        include_usage: `stream_options.include_usage`: send a final usage chunk.
        user: OpenAI's `user` field (visible to the policy as `meta.user`).
        metadata: OpenAI's `metadata` (visible as `meta.KEY`, except reserved names).
    """

    model: str
    messages: tuple[tuple[str, str], ...]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    user: str | None
    metadata: Mapping[str, str]


# Everything OpenAI accepts on this endpoint; anything else is an unknown parameter.
_IGNORED_NUMBERS = ("top_p", "presence_penalty", "frequency_penalty")
_IGNORED = frozenset(("top_p", "presence_penalty", "frequency_penalty", "seed", "logit_bias", "store",
                      "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier",
                      "reasoning_effort", "verbosity", "top_logprobs"))
_KNOWN = frozenset(("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stop", "stream",
                    "stream_options", "n", "user", "metadata", "tools", "tool_choice", "functions",
                    "function_call", "response_format", "logprobs", "modalities", "audio", "prediction",
                    "web_search_options")) | _IGNORED
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
               list: "an array", type(None): "null"}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _invalid_type(param: str, expected: str, value: Any) -> WireError:
    return WireError(400, f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
                     param=param, code="invalid_type")


def _unsupported(param: str, what: str) -> WireError:
    return WireError(400, f"'{param}': {what} is not supported by this router; remove it from the request "
                     "(see docs/service.md, 'What the service accepts').", param=param, code="unsupported_parameter")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object.

    Raises:
        WireError: 400 for anything else.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(400, f"We could not parse the JSON body of your request ({e}). The API expects a JSON "
                        "object; check that you send valid JSON with Content-Type: application/json.") from None
    if not isinstance(data, dict):
        raise WireError(400, f"The request body must be a JSON object, got {_type_name(data)}.")
    return data


def parse_chat_request(raw: bytes, *, default_max_tokens: int = 1000) -> ChatRequest:
    """Validate a chat completions body as OpenAI would.

    Args:
        raw: the request body.
        default_max_tokens: budget used when the client gives none (routing estimates cost from it).

    Raises:
        WireError: 400 with OpenAI's error fields.
    """
    body = parse_json_body(raw)
    unknown = [k for k in body if k not in _KNOWN]
    if unknown:
        raise WireError(400, f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")
    model = body.get("model")
    if model is None:
        raise WireError(400, "Missing required parameter: 'model'. Use \"auto\" to let the policy choose.",
                        param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    if not model:
        raise WireError(400, "Invalid 'model': empty string. Use \"auto\", a model name or a route name.",
                        param="model", code="invalid_value")
    messages = _messages(body)
    _refuse_unsupported(body)
    max_tokens = _max_tokens(body, default_max_tokens)
    temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    for name in _IGNORED_NUMBERS:
        if body.get(name) is not None:
            _number(body, name, -2.0, 2.0 if name != "top_p" else 1.0, 0.0)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    include_usage = _stream_options(body, bool(stream))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid_type("user", "a string", user)
    return ChatRequest(model=model, messages=messages, max_tokens=max_tokens, temperature=temperature,
                       stop=_stop(body), stream=bool(stream), include_usage=include_usage, user=user,
                       metadata=_metadata(body))


def _messages(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    msgs = body.get("messages")
    if msgs is None:
        raise WireError(400, "Missing required parameter: 'messages'.", param="messages",
                        code="missing_required_parameter")
    if not isinstance(msgs, list):
        raise _invalid_type("messages", "an array", msgs)
    if not msgs:
        raise WireError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                        "empty array instead.", param="messages", code="empty_array")
    return tuple(_message(m, i) for i, m in enumerate(msgs))


def _message(m: Any, i: int) -> tuple[str, str]:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _invalid_type(where, "an object", m)
    role = m.get("role")
    if role is None:
        raise WireError(400, f"Missing required parameter: '{where}.role'.", param=f"{where}.role",
                        code="missing_required_parameter")
    if role not in _ROLES:
        raise WireError(400, f"Invalid value: {role!r}. Supported values are: 'system', 'developer', 'user' and "
                        "'assistant'.", param=f"{where}.role", code="invalid_value")
    if role in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
        raise _unsupported(f"{where}.role" if role in ("tool", "function") else f"{where}.tool_calls",
                           "tool calling")
    for k in m:
        if k not in ("role", "content", "name", "refusal", "tool_calls", "function_call", "audio"):
            raise WireError(400, f"Unknown parameter: '{where}.{k}'.", param=f"{where}.{k}", code="unknown_parameter")
    if "content" not in m or m["content"] is None:
        raise WireError(400, f"Missing required parameter: '{where}.content'.", param=f"{where}.content",
                        code="missing_required_parameter")
    content = m["content"]
    if isinstance(content, list):
        content = _parts(content, f"{where}.content")
    elif not isinstance(content, str):
        raise _invalid_type(f"{where}.content", "a string or an array of content parts", content)
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        raise _invalid_type(f"{where}.name", "a string", name)
    return ("system" if role == "developer" else role), content


def _parts(parts: list[Any], where: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise _invalid_type(at, "an object", part)
        kind = part.get("type")
        if kind != "text":
            if kind in ("image_url", "input_audio", "file"):
                raise _unsupported(f"{at}.type", f"a {kind!r} content part")
            raise WireError(400, f"Invalid value: {kind!r}. Supported values are: 'text'.", param=f"{at}.type",
                            code="invalid_value")
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid_type(f"{at}.text", "a string", text)
        texts.append(text)
    return "\n".join(texts)


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("tools") or body.get("functions"):
        raise _unsupported("tools" if body.get("tools") else "functions", "tool calling")
    choice = body.get("tool_choice")
    if choice not in (None, "none", "auto"):
        raise _unsupported("tool_choice", "tool calling")
    if body.get("function_call") not in (None, "none", "auto"):
        raise _unsupported("function_call", "tool calling")
    n = body.get("n")
    if n is not None:
        if not _is_int(n):
            raise _invalid_type("n", "an integer", n)
        if n != 1:
            raise _unsupported("n", "more than one choice")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise _invalid_type("response_format", "an object", fmt)
        if fmt.get("type") != "text":
            raise _unsupported("response_format", f"response_format {fmt.get('type')!r}")
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _invalid_type("logprobs", "a boolean", logprobs)
    if logprobs:
        raise _unsupported("logprobs", "returning log probabilities")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise _unsupported("modalities", "output other than text")
    for name in ("audio", "prediction", "web_search_options"):
        if body.get(name) is not None:
            raise _unsupported(name, f"'{name}'")


def _max_tokens(body: Mapping[str, Any], default: int) -> int:
    value: Any = None
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if v is None:
            continue
        if not _is_int(v):
            raise _invalid_type(name, "an integer", v)
        if v < 1:
            raise WireError(400, f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                            f"{v} instead.", param=name, code="integer_below_min_value")
        value = v if value is None else value  # max_completion_tokens wins, as at OpenAI
    return default if value is None else int(value)


def _number(body: Mapping[str, Any], name: str, low: float, high: float, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if not _is_number(v):
        raise _invalid_type(name, "a number", v)
    if v < low:
        raise WireError(400, f"Invalid '{name}': decimal below minimum value. Expected a value >= {low:g}, but got "
                        f"{v} instead.", param=name, code="decimal_below_min_value")
    if v > high:
        raise WireError(400, f"Invalid '{name}': decimal above maximum value. Expected a value <= {high:g}, but got "
                        f"{v} instead.", param=name, code="decimal_above_max_value")
    return float(v)


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _invalid_type("stop", "a string or an array of strings", stop)
    if len(stop) > 4:
        raise WireError(400, f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an "
                        f"array with length {len(stop)} instead.", param="stop", code="array_above_max_length")
    return tuple(stop)


def _stream_options(body: Mapping[str, Any], stream: bool) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise _invalid_type("stream_options", "an object", opts)
    if not stream:
        raise WireError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        param="stream_options", code="invalid_value")
    for k in opts:
        if k not in ("include_usage", "include_obfuscation"):
            raise WireError(400, f"Unknown parameter: 'stream_options.{k}'.", param=f"stream_options.{k}",
                            code="unknown_parameter")
    usage = opts.get("include_usage", False)
    if not isinstance(usage, bool):
        raise _invalid_type("stream_options.include_usage", "a boolean", usage)
    return usage


def _metadata(body: Mapping[str, Any]) -> Mapping[str, str]:
    md = body.get("metadata")
    if md is None:
        return {}
    if not isinstance(md, dict):
        raise _invalid_type("metadata", "an object", md)
    if len(md) > 16:
        raise WireError(400, "Invalid 'metadata': at most 16 keys are allowed.", param="metadata",
                        code="invalid_value")
    for k, v in md.items():
        if not isinstance(v, str):
            raise _invalid_type(f"metadata.{k}", "a string", v)
        if len(k) > 64 or len(v) > 512:
            raise WireError(400, f"Invalid 'metadata.{k}': keys are at most 64 characters and values 512.",
                            param=f"metadata.{k}", code="invalid_value")
    return md


# -- responses ----------------------------------------------------------------------------------

_FINISH = {"stop": "stop", "length": "length"}


def finish_reason(reason: str) -> str:
    """The OpenAI finish_reason for the router's (`stop`, `length`, `other`)."""
    return _FINISH.get(reason, "stop")


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def completion_body(result: RoutedCompletion, created: int) -> bytes:
    """A `chat.completion` object for a served request; `model` is the policy's model name."""
    return _dumps({
        "id": f"chatcmpl-{result.request_id}", "object": "chat.completion", "created": created,
        "model": result.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text, "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": finish_reason(result.finish_reason)}],
        "usage": _usage(result.input_tokens, result.output_tokens),
        "service_tier": "default", "system_fingerprint": None,
    }).encode()


def models_body(models: Mapping[str, str], routes: tuple[str, ...], created: int) -> bytes:
    """`GET /v1/models`: `auto`, every route name and every model of the policy."""
    data = [{"id": "auto", "object": "model", "created": created, "owned_by": "router"}]
    data += [{"id": r, "object": "model", "created": created, "owned_by": "router"} for r in routes]
    data += [{"id": m, "object": "model", "created": created, "owned_by": p} for m, p in models.items()]
    return _dumps({"object": "list", "data": data}).encode()


class StreamEncoder:
    """Server-sent events of one streamed completion, in OpenAI's `chat.completion.chunk` shape.

    The JSON around the delta is fixed for a stream, so it is encoded once and each chunk only
    encodes its text.
    """

    __slots__ = ("_head", "_include_usage", "_prefix", "_suffix")

    def __init__(self, completion_id: str, created: int, model: str, *, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._head = (f'{{"id":{_dumps(completion_id)},"object":"chat.completion.chunk","created":{created},'
                      f'"model":{_dumps(model)},"service_tier":"default","system_fingerprint":null,"choices":')
        tail = ',"usage":null}' if include_usage else "}"
        self._prefix = "data: " + self._head + '[{"index":0,"delta":{"content":'
        self._suffix = '},"logprobs":null,"finish_reason":null}]' + tail + "\n\n"

    def first(self, text: str) -> bytes:
        """The opening chunk (role, as OpenAI sends it) followed by the first text."""
        tail = ',"usage":null}' if self._include_usage else "}"
        role = ("data: " + self._head + '[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
                '"logprobs":null,"finish_reason":null}]' + tail + "\n\n")
        return (role + (self._prefix + _dumps(text) + self._suffix if text else "")).encode()

    def delta(self, text: str) -> bytes:
        """One content chunk."""
        return (self._prefix + _dumps(text) + self._suffix).encode()

    def end(self, reason: str, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The finishing chunk, the usage chunk when asked for, and `[DONE]`."""
        tail = ',"usage":null}' if self._include_usage else "}"
        out = ("data: " + self._head + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
               + _dumps(finish_reason(reason)) + "}]" + tail + "\n\n")
        if self._include_usage:
            out += "data: " + self._head + "[],\"usage\":" + _dumps(_usage(prompt_tokens, completion_tokens)) + "}\n\n"
        return (out + "data: [DONE]\n\n").encode()

    @staticmethod
    def error(err: WireError) -> bytes:
        """An error after the stream has started, as OpenAI sends one (the SDK raises on it)."""
        return b"data: " + err.body() + b"\n\n"
