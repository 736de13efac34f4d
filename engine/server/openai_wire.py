"""OpenAI's Chat Completions wire format: request validation, responses, SSE chunks, errors.

Validation follows what OpenAI itself answers: a JSON object, known fields only, each of the
type OpenAI documents, with its error shape (`{"error": {message, type, param, code}}`) and
codes (`invalid_type`, `missing_required_parameter`, `unknown_parameter`, ...). The whole
request surface (tools, tool choice, output formats, images, tool calls and results, sampling)
is parsed into the conversation model (`adapters.conversation`); a field the router cannot
carry (n > 1, logprobs, audio, ...) is refused with a 400 naming it, never silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.conversation import (
    NO_OPTIONS,
    Message,
    Options,
    ToolCallDelta,
    coerce_messages,
    coerce_options,
    synth_call_id,
)
from adapters.errors import InvalidInput
from engine.runtime.result import RoutedCompletion

__all__ = [
    "ChatRequest",
    "StreamEncoder",
    "WireError",
    "completion_body",
    "error_body",
    "finish_reason",
    "invalid_input",
    "model_body",
    "models_body",
    "parse_chat_request",
    "parse_json_body",
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
    """A validated request of either door, reduced to what the router takes.

    Attributes:
        model: `auto`, a model name or a route name.
        messages: the conversation (`developer` is folded into `system`).
        max_tokens: output budget (`max_completion_tokens` or `max_tokens`, else the default).
        temperature: sampling temperature.
        stop: stop sequences.
        stream: answer as server-sent events.
        include_usage: `stream_options.include_usage`: send a final usage chunk.
        user: OpenAI's `user` field (visible to the policy as `meta.user`).
        metadata: OpenAI's `metadata` (visible as `meta.KEY`, except reserved names).
        options: tools, tool choice, output format and sampling, for the router.
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    user: str | None
    metadata: Mapping[str, str]
    options: Options = NO_OPTIONS


# Everything OpenAI accepts on this endpoint; anything else is an unknown parameter.
_OPTION_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "top_p", "seed",
                  "presence_penalty", "frequency_penalty")
# Accepted only at the value that asks for nothing (what OpenAI does by default); any other
# value is refused, since the router would otherwise drop it.
_DEFAULTS_ONLY: dict[str, tuple[Any, ...]] = {
    "n": (1,), "logprobs": (False,), "store": (False,), "service_tier": ("auto", "default"), "logit_bias": ({},),
    "modalities": (["text"],),
}
_REFUSED = {
    "functions": "legacy function calling (send `tools`)", "function_call": "legacy function calling (send "
    "`tool_choice`)", "top_logprobs": "returning log probabilities", "audio": "audio output",
    "prediction": "predicted outputs", "web_search_options": "web search", "reasoning_effort": "reasoning effort",
    "verbosity": "verbosity", "prompt_cache_key": "prompt cache keys", "safety_identifier": "safety identifiers "
    "(send `user`, which the policy and the decision log see)",
}
_KNOWN = frozenset(("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stop", "stream",
                    "stream_options", "user", "metadata", *_OPTION_FIELDS, *_DEFAULTS_ONLY, *_REFUSED))
# Fields a plain request never sends: a body with none of them skips those checks altogether.
_OPTION_SET = frozenset(_OPTION_FIELDS)
_CHECKED_VALUES = frozenset((*_DEFAULTS_ONLY, *_REFUSED))
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# `annotations` is output-only (URL citations of an earlier answer); clients that append the
# SDK's answer object to their history send it back, so it is accepted and has no effect
_MESSAGE_KEYS = frozenset(("role", "content", "name", "refusal", "tool_calls", "tool_call_id", "function_call",
                           "audio", "annotations"))
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
               list: "an array", type(None): "null"}
_PARAM = re.compile(r"^([A-Za-z_]+(?:\[\d+\])?(?:\.[A-Za-z_]+(?:\[\d+\])?)*)")


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _invalid_type(param: str, expected: str, value: Any) -> WireError:
    return WireError(400, f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
                     param=param, code="invalid_type")


def _unsupported(param: str, what: str) -> WireError:
    return WireError(400, f"'{param}': {what} is not supported by this router; remove it from the request "
                     "(see docs/service.md, 'What the service accepts').", param=param, code="unsupported_parameter")


def invalid_input(e: InvalidInput, default_param: str, roots: frozenset[str] | tuple[str, ...]) -> WireError:
    """A 400 for the conversation model's refusal, naming the field it names (else `default_param`)."""
    message = str(e)
    m = _PARAM.match(message)
    param = m.group(1) if m and m.group(1).split("[")[0].split(".")[0] in roots else default_param
    code = "unsupported_parameter" if "not supported" in message else "invalid_value"
    return WireError(400, f"Invalid '{param}': {message}.", param=param, code=code)


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
        WireError: 400 with OpenAI's error fields, naming the offending parameter.
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
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    include_usage = _stream_options(body, bool(stream))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid_type("user", "a string", user)
    return ChatRequest(model=model, messages=messages, max_tokens=max_tokens, temperature=temperature,
                       stop=_stop(body), stream=bool(stream), include_usage=include_usage, user=user,
                       metadata=_metadata(body), options=_options(body))


def _options(body: Mapping[str, Any]) -> Options:
    if _OPTION_SET.isdisjoint(body) or not any(body.get(k) is not None for k in _OPTION_FIELDS):
        return NO_OPTIONS  # the plain-text fast path: nothing to coerce
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    for i, t in enumerate(tools or ()):
        if not isinstance(t, dict):
            raise _invalid_type(f"tools[{i}]", "an object", t)
        kind = t.get("type")
        if kind != "function":
            if kind == "custom":
                raise _unsupported(f"tools[{i}].type", "a custom (free-form) tool")
            raise WireError(400, f"Invalid value: {kind!r}. Supported values are: 'function'.",
                            param=f"tools[{i}].type", code="invalid_value")
    fmt = body.get("response_format")
    if fmt is not None and not isinstance(fmt, dict):
        raise _invalid_type("response_format", "an object", fmt)
    for name in ("top_p", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None:
            _number(body, name, -2.0 if name != "top_p" else 0.0, 2.0 if name != "top_p" else 1.0, 0.0)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _invalid_type("seed", "an integer", seed)
    ptc = body.get("parallel_tool_calls")
    if ptc is not None and not isinstance(ptc, bool):
        raise _invalid_type("parallel_tool_calls", "a boolean", ptc)
    try:
        return coerce_options(**{k: body.get(k) for k in _OPTION_FIELDS})
    except InvalidInput as e:
        raise invalid_input(e, "tools", _OPTION_FIELDS) from None


def _messages(body: Mapping[str, Any]) -> tuple[Message, ...]:
    msgs = body.get("messages")
    if msgs is None:
        raise WireError(400, "Missing required parameter: 'messages'.", param="messages",
                        code="missing_required_parameter")
    if not isinstance(msgs, list):
        raise _invalid_type("messages", "an array", msgs)
    if not msgs:
        raise WireError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                        "empty array instead.", param="messages", code="empty_array")
    for i, m in enumerate(msgs):
        _check_message(m, i)
    try:
        return coerce_messages(msgs)
    except InvalidInput as e:
        raise invalid_input(e, "messages", ("messages",)) from None


def _check_message(m: Any, i: int) -> None:
    """OpenAI's own checks of one message (type errors, unknown keys), before the conversation model's."""
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _invalid_type(where, "an object", m)
    role = m.get("role")
    if role is None:
        raise WireError(400, f"Missing required parameter: '{where}.role'.", param=f"{where}.role",
                        code="missing_required_parameter")
    if role not in _ROLES:
        raise WireError(400, f"Invalid value: {role!r}. Supported values are: 'system', 'developer', 'user', "
                        "'assistant' and 'tool'.", param=f"{where}.role", code="invalid_value")
    if role == "function" or m.get("function_call") is not None:
        raise _unsupported(f"{where}.role" if role == "function" else f"{where}.function_call",
                           "legacy function calling (send `tools` and `tool` messages)")
    if m.get("audio") is not None:
        raise _unsupported(f"{where}.audio", "audio")
    for k in m:
        if k not in _MESSAGE_KEYS:
            raise WireError(400, f"Unknown parameter: '{where}.{k}'.", param=f"{where}.{k}", code="unknown_parameter")
    content = m.get("content")
    if content is None and not (role == "assistant" and m.get("tool_calls")):
        raise WireError(400, f"Missing required parameter: '{where}.content'.", param=f"{where}.content",
                        code="missing_required_parameter")
    if isinstance(content, list):
        for j, part in enumerate(content):
            _check_part(part, f"{where}.content[{j}]")
    elif content is not None and not isinstance(content, str):
        raise _invalid_type(f"{where}.content", "a string or an array of content parts", content)
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        raise _invalid_type(f"{where}.name", "a string", name)
    calls = m.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _invalid_type(f"{where}.tool_calls", "an array", calls)


def _check_part(part: Any, at: str) -> None:
    if not isinstance(part, dict):
        raise _invalid_type(at, "an object", part)
    kind = part.get("type")
    if kind in ("input_audio", "file", "refusal"):
        raise _unsupported(f"{at}.type", f"a {kind!r} content part")
    if kind not in ("text", "image_url"):
        raise WireError(400, f"Invalid value: {kind!r}. Supported values are: 'text' and 'image_url'.",
                        param=f"{at}.type", code="invalid_value")
    if kind == "text" and not isinstance(part.get("text"), str):
        raise _invalid_type(f"{at}.text", "a string", part.get("text"))


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    if _CHECKED_VALUES.isdisjoint(body):
        return
    for name, what in _REFUSED.items():
        if body.get(name) is not None:
            raise _unsupported(name, what)
    for name, allowed in _DEFAULTS_ONLY.items():
        v = body.get(name)
        if v is not None and not any(v == a and type(v) is type(a) for a in allowed):
            raise _unsupported(name, f"{name}={json.dumps(v)}")


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

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


def finish_reason(reason: str) -> str:
    """The OpenAI finish_reason for the router's (`stop`, `length`, `tool_calls`, `content_filter`, `other`)."""
    return _FINISH.get(reason, "stop")


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _int(n: int) -> str:
    return str(n) if type(n) is int else _dumps(n)  # what the encoder writes for it, whatever it is


def completion_body(result: RoutedCompletion, created: int) -> bytes:
    """A `chat.completion` object for a served request; `model` is the policy's model name.

    A turn that only calls tools has `content: null` and `message.tool_calls`, as OpenAI sends it.
    The object's shape is fixed, so it is written as text around the encoded values: the same
    bytes as encoding the whole object (`{"id": ..., "object": "chat.completion", ...}`,
    compact, keys in this order), for a fraction of the cost.
    """
    calls = result.tool_calls
    content = _dumps(result.text) if result.text or not calls else "null"
    if calls:
        content += ',"refusal":null,"annotations":[],"tool_calls":' + _dumps(
            [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
             for c in calls])
    else:
        content += ',"refusal":null,"annotations":[]'
    prompt, completion = result.input_tokens, result.output_tokens
    return ('{"id":' + _dumps(f"chatcmpl-{result.request_id}") + ',"object":"chat.completion","created":'
            + _int(created) + ',"model":' + _dumps(result.model)
            + ',"choices":[{"index":0,"message":{"role":"assistant","content":' + content
            + '},"logprobs":null,"finish_reason":' + _dumps(finish_reason(result.finish_reason))
            + '}],"usage":{"prompt_tokens":' + _int(prompt) + ',"completion_tokens":' + _int(completion)
            + ',"total_tokens":' + _int(prompt + completion)
            + ',"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":'
            '{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
            '"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":null}').encode()


def _model(name: str, owner: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def models_body(models: Mapping[str, str], routes: tuple[str, ...], created: int) -> bytes:
    """`GET /v1/models`: `auto`, every route name and every model of the policy."""
    data = [_model("auto", "router", created)]
    data += [_model(r, "router", created) for r in routes]
    data += [_model(m, p, created) for m, p in models.items()]
    return _dumps({"object": "list", "data": data}).encode()


def model_body(name: str, models: Mapping[str, str], routes: tuple[str, ...], created: int) -> bytes:
    """`GET /v1/models/{name}`: one entry of the list.

    Raises:
        WireError: 404 `model_not_found` for a name the policy does not know.
    """
    if name == "auto" or name in routes:
        return _dumps(_model(name, "router", created)).encode()
    if name in models:
        return _dumps(_model(name, models[name], created)).encode()
    raise WireError(404, f"The model `{name}` does not exist. GET /v1/models lists `auto`, the routes and the "
                    "models of the policy.", param="model", code="model_not_found")


class StreamEncoder:
    """Server-sent events of one streamed completion, in OpenAI's `chat.completion.chunk` shape.

    The JSON around the delta is fixed for a stream, so it is encoded once and each chunk only
    encodes its text. Tool calls come as `delta.tool_calls[{index, id, type, function}]`: id,
    type and name on a call's first chunk, argument fragments after, as OpenAI streams them.
    """

    __slots__ = ("_completion_id", "_head", "_include_usage", "_prefix", "_started_calls", "_suffix", "_tail")

    def __init__(self, completion_id: str, created: int, model: str, *, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._completion_id = completion_id
        self._head = (f'{{"id":{_dumps(completion_id)},"object":"chat.completion.chunk","created":{created},'
                      f'"model":{_dumps(model)},"service_tier":"default","system_fingerprint":null,"choices":')
        self._tail = ',"usage":null}' if include_usage else "}"
        self._prefix = "data: " + self._head + '[{"index":0,"delta":{"content":'
        self._suffix = '},"logprobs":null,"finish_reason":null}]' + self._tail + "\n\n"
        self._started_calls: set[int] = set()

    def first(self, text: str) -> bytes:
        """The opening chunk (role, as OpenAI sends it) followed by the first text."""
        role = ("data: " + self._head + '[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
                '"logprobs":null,"finish_reason":null}]' + self._tail + "\n\n")
        return (role + (self._prefix + _dumps(text) + self._suffix if text else "")).encode()

    def delta(self, text: str) -> bytes:
        """One content chunk."""
        return (self._prefix + _dumps(text) + self._suffix).encode()

    def tool_call(self, d: ToolCallDelta) -> bytes:
        """One tool-call chunk: the call's opening (id, type, name) or an argument fragment."""
        call: dict[str, Any]
        if d.index not in self._started_calls:
            self._started_calls.add(d.index)
            name = d.name or ""
            call = {"index": d.index, "id": d.id or synth_call_id(name, d.index, self._completion_id),
                    "type": "function", "function": {"name": name, "arguments": d.arguments}}
        else:
            call = {"index": d.index, "function": {"arguments": d.arguments}}
        return ("data: " + self._head + '[{"index":0,"delta":{"tool_calls":[' + _dumps(call)
                + ']},"logprobs":null,"finish_reason":null}]' + self._tail + "\n\n").encode()

    def end(self, reason: str, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The finishing chunk, the usage chunk when asked for, and `[DONE]`."""
        out = ("data: " + self._head + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
               + _dumps(finish_reason(reason)) + "}]" + self._tail + "\n\n")
        if self._include_usage:
            out += "data: " + self._head + "[],\"usage\":" + _dumps(_usage(prompt_tokens, completion_tokens)) + "}\n\n"
        return (out + "data: [DONE]\n\n").encode()

    @staticmethod
    def error(err: WireError) -> bytes:
        """An error after the stream has started, as OpenAI sends one (the SDK raises on it)."""
        return b"data: " + err.body() + b"\n\n"
