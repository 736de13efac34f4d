"""The conversation model: one request/response shape for every vendor, door and layer.

Adapters map it to and from each vendor's wire format; the runtime, `decide`, the cache, the
decision log and both service doors (OpenAI and Anthropic formats) read it. Nothing else
invents its own dict shape for messages, parts, tools or output formats.

    Message(role, content)                  content: str, or a tuple of parts
      parts: TextPart | ImagePart           (file/audio parts would join the same union)
      assistant turns: tool_calls=(ToolCall, ...)
      tool turns: tool_call_id=..., content = the tool's result
    Options                                 tools, tool_choice, parallel_tool_calls, output
                                            format, top_p, seed, penalties, user, metadata,
                                            extra_body
    response: text + tool_calls + finish reason + usage (adapters.base.Completion)
    stream: TextDelta | ToolCallDelta ... then StreamEnd

`coerce_*` functions accept the OpenAI Chat Completions shapes (the lingua franca of client
libraries) as well as these dataclasses, and raise `InvalidInput` naming the offending field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from adapters.errors import InvalidInput

__all__ = [
    "ROLES",
    "Conversation",
    "ImagePart",
    "Message",
    "Options",
    "OutputFormat",
    "Part",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallAccumulator",
    "ToolCallDelta",
    "ToolChoice",
    "coerce_message",
    "coerce_messages",
    "coerce_options",
    "coerce_output_format",
    "coerce_tool",
    "coerce_tool_choice",
    "needed_features",
    "options_of",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "other"]

_DATA_URL = re.compile(r"^data:(?P<mt>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[^;,]*)*;base64,(?P<data>.*)$", re.S)
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


# -- parts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPart:
    """A piece of text in a message."""

    text: str
    part_kind: ClassVar[str] = "text"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, by URL or inline (base64 data with its media type).

    Attributes:
        url: An http(s) URL the vendor fetches (None for inline data).
        data: Base64 of the image bytes (None for a URL).
        media_type: e.g. "image/png"; required with `data`.
        detail: OpenAI's "low" / "high" / "auto" hint, or None.
    """

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    part_kind: ClassVar[str] = "image"

    @classmethod
    def from_url(cls, url: str, detail: str | None = None) -> ImagePart:
        """An image from an http(s) URL or a `data:<media type>;base64,...` URL."""
        m = _DATA_URL.match(url)
        if m:
            return cls(data=m.group("data"), media_type=m.group("mt").lower(), detail=detail)
        return cls(url=url, detail=detail)

    @property
    def data_url(self) -> str:
        """The image as one URL: its own, or a data URL of the inline bytes."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.data}"

    @property
    def content_hash(self) -> str:
        """sha256 of what identifies the image (its bytes or its URL): for cache keys and logs."""
        return hashlib.sha256((self.data or self.url or "").encode()).hexdigest()

    def raw(self) -> bytes:
        """The decoded bytes of an inline image."""
        if self.data is None:
            raise InvalidInput("image is given by URL, not inline data")
        return base64.b64decode(self.data)


Part = TextPart | ImagePart


# -- tools ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asks for.

    Attributes:
        id: The call's id (the vendor's, or synthesized stably when it gives none).
        name: Tool name.
        arguments: The arguments as a JSON string, exactly as OpenAI returns them.
    """

    id: str
    name: str
    arguments: str = "{}"

    def args(self) -> dict[str, Any]:
        """The arguments parsed; `{}` for empty text.

        Raises:
            ValueError: the model produced arguments that are not a JSON object.
        """
        if not self.arguments.strip():
            return {}
        value = json.loads(self.arguments)
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r} arguments are not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call.

    Attributes:
        name: ^[A-Za-z0-9_-]{1,64}$, as every vendor requires.
        description: What it does (helps the model choose).
        parameters: JSON Schema of its arguments (an object schema).
        strict: OpenAI's strict schema adherence flag, or None.
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """How the model may use the tools: auto, none, required, or one named tool (`mode="tool"`)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None

    @classmethod
    def tool(cls, name: str) -> ToolChoice:
        """Force a call of this tool."""
        return cls("tool", name)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A streamed piece of a tool call.

    The first delta of a call carries its `id` and `name`; later ones carry argument
    fragments only. `index` identifies the call within the response (0, 1, ... in order of
    first appearance), whatever the vendor numbers its blocks.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class ToolCallAccumulator:
    """Reassembles streamed tool calls from their deltas: the one place this is done."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, [fragments]]

    def add(self, delta: ToolCallDelta) -> None:
        """Take one delta, in stream order."""
        slot = self._calls.get(delta.index)
        if slot is None:
            slot = self._calls[delta.index] = [delta.id, delta.name, []]
        else:
            if delta.id and not slot[0]:
                slot[0] = delta.id
            if delta.name and not slot[1]:
                slot[1] = delta.name
        if delta.arguments:
            slot[2].append(delta.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> tuple[ToolCall, ...]:
        """The assembled calls, by index."""
        return tuple(ToolCall(slot[0] or synth_call_id(slot[1] or "", i), slot[1] or "", "".join(slot[2]) or "{}")
                     for i, slot in sorted(self._calls.items()))


def synth_call_id(name: str, index: int, salt: str = "") -> str:
    """A stable tool-call id for vendors that give none (Gemini): same call, same id."""
    digest = hashlib.sha256(f"{salt}\x1f{name}\x1f{index}".encode()).hexdigest()[:24]
    return f"call_{digest}"


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation.

    Attributes:
        role: system, user, assistant or tool.
        content: Text, or a tuple of parts (text and images).
        tool_calls: On an assistant turn, the calls the model made.
        tool_call_id: On a tool turn, the call this result answers.
        name: On a tool turn, the tool's name (Gemini needs it; taken from the matching call
            when absent).
    """

    role: Role
    content: str | tuple[Part, ...] = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text: its content, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def parts(self) -> tuple[Part, ...]:
        """The content as parts (a plain string is one text part; empty text is none)."""
        if isinstance(self.content, str):
            return (TextPart(self.content),) if self.content else ()
        return self.content

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The message's image parts."""
        if isinstance(self.content, str):
            return ()
        return tuple(p for p in self.content if isinstance(p, ImagePart))


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What shape the answer must have: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a request may ask beyond messages, max_tokens, temperature and stop.

    Every field defaults to "not asked"; an adapter that cannot honour a field that is set
    raises `BadRequest` naming it before any network call.
    """

    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    output: OutputFormat | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    metadata: Mapping[str, str] | None = None
    extra_body: Mapping[str, Any] | None = None

    def asked(self) -> tuple[str, ...]:
        """Names of the fields that are set (OpenAI's parameter names), for error messages."""
        out: list[str] = []
        if self.tools:
            out.append("tools")
        for name in ("tool_choice", "parallel_tool_calls", "top_p", "seed", "presence_penalty",
                     "frequency_penalty", "user", "metadata"):
            if getattr(self, name) is not None:
                out.append(name)
        if self.output is not None and self.output.type != "text":
            out.append("response_format")
        if self.extra_body:
            out.extend(sorted(self.extra_body))
        return tuple(out)

    def cache_fields(self) -> dict[str, Any]:
        """What of the options changes the answer, as plain JSON values (for cache keys)."""
        out: dict[str, Any] = {}
        if self.tools:
            out["tools"] = [[t.name, t.description, t.parameters, t.strict] for t in self.tools]
        if self.tool_choice is not None:
            out["tool_choice"] = [self.tool_choice.mode, self.tool_choice.name]
        if self.output is not None:
            o = self.output
            out["output"] = [o.type, o.name, o.schema, o.strict]
        for name in ("parallel_tool_calls", "top_p", "seed", "presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        if self.extra_body:
            out["extra_body"] = dict(self.extra_body)
        return out


NO_OPTIONS = Options()


def needed_features(messages: Sequence[Message], options: Options, *, stream: bool = False) -> frozenset[str]:
    """The model features a request needs, in the policy's vocabulary.

    `tools` (tools offered, or tool calls/results in the history), `vision` (an image),
    `json` (json_object output), `json_schema` (schema-constrained output; also needs
    `json`), `streaming`.
    """
    need: set[str] = set()
    if options.tools or any(m.tool_calls or m.role == "tool" for m in messages):
        need.add("tools")
    if any(m.images for m in messages):
        need.add("vision")
    if options.output is not None and options.output.type != "text":
        need.add("json")
        if options.output.type == "json_schema":
            need.add("json_schema")
    if stream:
        need.add("streaming")
    return frozenset(need)


# -- coercion from caller shapes -------------------------------------------------------------


class Conversation(tuple[Message, ...]):
    """Messages that passed `coerce_messages`: each message's checks and the whole conversation's.

    A tuple of frozen messages cannot change, so checking one again (the router, then the
    adapter, behind the service's parser) returns it as it is.
    """

    __slots__ = ()


def coerce_messages(messages: Iterable[Any] | None) -> Conversation:
    """Messages from `Message`s, (role, content) pairs or OpenAI-shaped dicts; checked.

    Raises:
        InvalidInput: naming the message index and field.
    """
    if type(messages) is Conversation:
        return messages
    if isinstance(messages, (str, bytes)) or messages is None:
        raise InvalidInput("messages must be a list of messages")
    out = Conversation(coerce_message(m, i) for i, m in enumerate(messages))
    if not out:
        raise InvalidInput("messages is empty")
    check_conversation(out)
    return out


def check_conversation(msgs: Sequence[Message]) -> None:
    """Whole-conversation rules: something to answer, and tool results that answer a call."""
    if all(m.role == "system" for m in msgs):
        raise InvalidInput("messages hold no user turn, only system messages")
    if not any(m.role != "system" and (m.text.strip() or m.images or m.tool_calls or m.role == "tool")
               for m in msgs):
        raise InvalidInput("prompt is empty: there is no non-blank user or assistant message")
    called: dict[str, str] = {}
    for i, m in enumerate(msgs):
        for c in m.tool_calls:
            called[c.id] = c.name
        if m.role == "tool" and m.tool_call_id not in called:
            raise InvalidInput(f"messages[{i}]: tool result for {m.tool_call_id!r}, which no earlier assistant "
                               "turn called")


def coerce_message(m: Any, i: int = 0) -> Message:
    """One message from a `Message`, a (role, content) pair, or an OpenAI-shaped dict."""
    where = f"messages[{i}]"
    if isinstance(m, Message):
        _check_message(m, where)
        return m
    if isinstance(m, Mapping):
        return _message_from_dict(m, where)
    if isinstance(m, (tuple, list)) and len(m) == 2:
        role, content = m
        return coerce_message({"role": role, "content": content}, i)
    role, content = getattr(m, "role", None), getattr(m, "content", None)
    if role is None:
        raise InvalidInput(f"{where} must be a Message, a (role, content) pair or a dict, got {type(m).__name__}")
    return coerce_message({"role": role, "content": content}, i)


def _message_from_dict(d: Mapping[str, Any], where: str) -> Message:
    role = d.get("role")
    if role == "developer":  # OpenAI's newer name for a system message
        role = "system"
    if role not in ROLES:
        raise InvalidInput(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
    content = _content(d.get("content"), f"{where}.content", role)
    calls: tuple[ToolCall, ...] = ()
    raw_calls = d.get("tool_calls")
    if raw_calls:
        if role != "assistant":
            raise InvalidInput(f"{where}.tool_calls is only allowed on an assistant message")
        if not isinstance(raw_calls, Sequence) or isinstance(raw_calls, (str, bytes)):
            raise InvalidInput(f"{where}.tool_calls must be a list")
        calls = tuple(_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls))
    msg = Message(role, content, calls, _opt_str(d.get("tool_call_id"), f"{where}.tool_call_id"),
                  _opt_str(d.get("name"), f"{where}.name"))
    _check_message(msg, where)
    return msg


def _check_message(m: Message, where: str) -> None:
    if m.role not in ROLES:
        raise InvalidInput(f"{where}.role must be one of {', '.join(ROLES)}, got {m.role!r}")
    if not isinstance(m.content, (str, tuple)):
        raise InvalidInput(f"{where}.content must be a string or a tuple of parts")
    if m.role == "tool" and not m.tool_call_id:
        raise InvalidInput(f"{where}: a tool message needs tool_call_id (the call it answers)")
    if m.role != "tool" and m.tool_call_id:
        raise InvalidInput(f"{where}.tool_call_id is only allowed on a tool message")
    if m.images and m.role != "user":
        raise InvalidInput(f"{where}: images are only allowed in user messages")
    if m.role != "tool" and not m.text.strip() and not m.images and not m.tool_calls:
        raise InvalidInput(f"{where}.content is empty or whitespace only")
    if m.tool_calls and m.role != "assistant":
        raise InvalidInput(f"{where}.tool_calls is only allowed on an assistant message")


def _content(raw: Any, where: str, role: str) -> str | tuple[Part, ...]:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (TextPart, ImagePart)):
        return (raw,)
    if not isinstance(raw, Sequence) or isinstance(raw, bytes):
        raise InvalidInput(f"{where} must be a string or a list of content parts, got {type(raw).__name__}")
    parts: list[Part] = []
    for j, p in enumerate(raw):
        parts.append(_part(p, f"{where}[{j}]"))
    return tuple(parts)


def _part(p: Any, where: str) -> Part:
    if isinstance(p, (TextPart, ImagePart)):
        if isinstance(p, ImagePart):
            _check_image(p, where)
        return p
    if not isinstance(p, Mapping):
        raise InvalidInput(f"{where} must be a content part object, got {type(p).__name__}")
    kind = p.get("type")
    if kind == "text":
        text = p.get("text")
        if not isinstance(text, str):
            raise InvalidInput(f"{where}.text must be a string")
        return TextPart(text)
    if kind == "image_url":
        spec = p.get("image_url")
        url = spec.get("url") if isinstance(spec, Mapping) else spec
        if not isinstance(url, str) or not url:
            raise InvalidInput(f"{where}.image_url.url must be a non-empty string")
        detail = spec.get("detail") if isinstance(spec, Mapping) else None
        img = ImagePart.from_url(url, detail if isinstance(detail, str) else None)
        _check_image(img, where)
        return img
    raise InvalidInput(f"{where}.type {kind!r} is not supported (text, image_url)")


def _check_image(img: ImagePart, where: str) -> None:
    if img.url is not None:
        if not img.url.startswith(("http://", "https://")):
            raise InvalidInput(f"{where}: image URL must be http(s) or a base64 data URL")
        return
    if img.media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidInput(f"{where}: image media type {img.media_type!r} is not one of "
                           f"{', '.join(sorted(IMAGE_MEDIA_TYPES))}")
    try:
        base64.b64decode(img.data or "", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: image data is not valid base64") from None


def _tool_call(c: Any, where: str) -> ToolCall:
    if isinstance(c, ToolCall):
        return c
    if not isinstance(c, Mapping):
        raise InvalidInput(f"{where} must be an object")
    fn = c.get("function")
    if not isinstance(fn, Mapping):
        raise InvalidInput(f"{where}.function must be an object with name and arguments")
    name, args, cid = fn.get("name"), fn.get("arguments", "{}"), c.get("id")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.function.name must be a non-empty string")
    if isinstance(args, Mapping):
        args = json.dumps(args)
    if not isinstance(args, str):
        raise InvalidInput(f"{where}.function.arguments must be a JSON string")
    if not isinstance(cid, str) or not cid:
        raise InvalidInput(f"{where}.id must be a non-empty string")
    return ToolCall(cid, name, args)


def coerce_tool(t: Any, i: int = 0) -> Tool:
    """A tool from a `Tool` or OpenAI's `{"type": "function", "function": {...}}`."""
    where = f"tools[{i}]"
    if isinstance(t, Tool):
        tool = t
    else:
        if not isinstance(t, Mapping):
            raise InvalidInput(f"{where} must be an object")
        if t.get("type", "function") != "function":
            raise InvalidInput(f"{where}.type {t.get('type')!r} is not supported (function)")
        fn = t.get("function", t)
        if not isinstance(fn, Mapping):
            raise InvalidInput(f"{where}.function must be an object")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, Mapping):
            raise InvalidInput(f"{where}.function.parameters must be a JSON Schema object")
        desc = fn.get("description") or ""
        strict = fn.get("strict")
        if not isinstance(desc, str):
            raise InvalidInput(f"{where}.function.description must be a string")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidInput(f"{where}.function.strict must be a boolean")
        tool = Tool(str(fn.get("name") or ""), desc, dict(params), strict)
    if not _TOOL_NAME.match(tool.name):
        raise InvalidInput(f"{where}.function.name {tool.name!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
    if tool.parameters.get("type", "object") != "object":
        raise InvalidInput(f"{where}.function.parameters must describe an object (type: object)")
    return tool


def coerce_tool_choice(c: Any) -> ToolChoice | None:
    """`auto`/`none`/`required`, `{"type": "function", "function": {"name": ...}}`, or a `ToolChoice`."""
    if c is None or isinstance(c, ToolChoice):
        return c
    if isinstance(c, str):
        if c in ("auto", "none", "required"):
            return ToolChoice(c)  # type: ignore[arg-type]
        raise InvalidInput(f"tool_choice must be auto, none, required or a named function, got {c!r}")
    if isinstance(c, Mapping):
        fn = c.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if isinstance(name, str) and name:
            return ToolChoice.tool(name)
    raise InvalidInput("tool_choice must be auto, none, required or {\"type\": \"function\", "
                       "\"function\": {\"name\": ...}}")


def coerce_output_format(f: Any) -> OutputFormat | None:
    """OpenAI's `response_format` (text, json_object, json_schema) or an `OutputFormat`."""
    if f is None or isinstance(f, OutputFormat):
        return f
    if not isinstance(f, Mapping):
        raise InvalidInput("response_format must be an object with a type")
    kind = f.get("type")
    if kind in ("text", "json_object"):
        return OutputFormat(kind)
    if kind == "json_schema":
        spec = f.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidInput("response_format.json_schema must be an object with name and schema")
        name, schema = spec.get("name"), spec.get("schema")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidInput("response_format.json_schema.name must match ^[A-Za-z0-9_-]{1,64}$")
        if not isinstance(schema, Mapping):
            raise InvalidInput("response_format.json_schema.schema must be a JSON Schema object")
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidInput("response_format.json_schema.strict must be a boolean")
        desc = spec.get("description")
        return OutputFormat("json_schema", name, dict(schema), strict, desc if isinstance(desc, str) else None)
    raise InvalidInput(f"response_format.type must be text, json_object or json_schema, got {kind!r}")


def coerce_options(*, tools: Sequence[Any] | None = None, tool_choice: Any = None,
                   parallel_tool_calls: bool | None = None, response_format: Any = None,
                   top_p: float | None = None, seed: int | None = None, presence_penalty: float | None = None,
                   frequency_penalty: float | None = None, user: str | None = None,
                   metadata: Mapping[str, str] | None = None,
                   extra_body: Mapping[str, Any] | None = None) -> Options:
    """`Options` from OpenAI-style keyword arguments, each checked.

    Raises:
        InvalidInput: naming the parameter.
    """
    if tools is not None and (isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence)):
        raise InvalidInput("tools must be a list of tool definitions")
    tool_list = tuple(coerce_tool(t, i) for i, t in enumerate(tools or ()))
    names = [t.name for t in tool_list]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InvalidInput(f"tools: {dup!r} is defined twice")
    choice = coerce_tool_choice(tool_choice)
    if choice is not None and choice.mode in ("required", "tool") and not tool_list:
        raise InvalidInput(f"tool_choice {choice.mode!r} needs tools")
    if choice is not None and choice.mode == "tool" and choice.name not in names:
        raise InvalidInput(f"tool_choice names {choice.name!r}, which is not among the tools ({', '.join(names)})")
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidInput("parallel_tool_calls must be a boolean")
    _range("top_p", top_p, 0.0, 1.0)
    _range("presence_penalty", presence_penalty, -2.0, 2.0)
    _range("frequency_penalty", frequency_penalty, -2.0, 2.0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidInput(f"seed must be an integer, got {seed!r}")
    if user is not None and not isinstance(user, str):
        raise InvalidInput("user must be a string")
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise InvalidInput("metadata must map strings to strings")
        metadata = dict(metadata)
    if extra_body is not None:
        if not isinstance(extra_body, Mapping) or not all(isinstance(k, str) for k in extra_body):
            raise InvalidInput("extra_body must be an object")
        extra_body = dict(extra_body) or None
    output = coerce_output_format(response_format)
    if output is not None and output.type == "text":
        output = None
    return Options(tool_list, choice, parallel_tool_calls, output, _num(top_p), seed, _num(presence_penalty),
                   _num(frequency_penalty), user, metadata, extra_body)


SURFACE_KEYWORDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "top_p", "seed",
                    "presence_penalty", "frequency_penalty", "user", "metadata", "extra_body")
"""The OpenAI-style keywords `coerce_options` takes (and `generate`/`stream` pass through)."""


def options_of(options: Options | None, surface: Mapping[str, Any]) -> Options:
    """The request's `Options`: given as one object, or as OpenAI-style keywords, not both.

    Raises:
        InvalidInput: both forms given, an unknown keyword, or a malformed value (named).
    """
    if not surface:
        return NO_OPTIONS if options is None else options
    if options is not None:
        raise InvalidInput(f"give options or the keywords {', '.join(sorted(surface))}, not both")
    unknown = sorted(set(surface) - set(SURFACE_KEYWORDS))
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(SURFACE_KEYWORDS)}")
    return coerce_options(**surface)


def _range(name: str, v: Any, lo: float, hi: float) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise InvalidInput(f"{name} must be a number between {lo:g} and {hi:g}, got {v!r}")


def _num(v: float | None) -> float | None:
    return None if v is None else float(v)


def _opt_str(v: Any, where: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidInput(f"{where} must be a string")
    return v
