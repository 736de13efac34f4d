"""Anthropic Messages API through the official `anthropic` SDK (imported on first use)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from typing import TYPE_CHECKING, Any

from adapters.base import LLMAdapter, Price, Reply, Request, Usage
from adapters.conversation import ImagePart, Message, Options, TextPart, ToolCall, ToolCallDelta
from adapters.errors import (
    AuthError,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
    class_for_status,
    parse_retry_after,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message as AnthropicMessage
    from anthropic.types import RawMessageStreamEvent

__all__ = ["AnthropicAdapter"]

_PIP = "pip install 'anthropic>=0.40'"
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}
JSON_TOOL = "json_output"
"""Name of the forced tool that carries a `json_object` answer (Anthropic has no JSON mode
for free-form objects: its structured outputs need a closed schema)."""
_JSON_TOOL_DESCRIPTION = "Give your whole answer as this tool's input: one JSON object."
# error.type of an error event inside a 200 stream, where the HTTP status says nothing
_BY_TYPE: dict[str, type[ProviderError]] = {
    "overloaded_error": Overloaded,
    "rate_limit_error": RateLimited,
    "api_error": ServerError,
    "timeout_error": Timeout,
    "authentication_error": AuthError,
    "permission_error": AuthError,
    "billing_error": AuthError,
    "invalid_request_error": BadRequest,
    "not_found_error": BadRequest,
    "request_too_large": BadRequest,
}


class AnthropicAdapter(LLMAdapter):
    """Anthropic's `POST /v1/messages`.

    Args:
        provider: Provider name.
        model: Claude model id.
        api_key: The key; defaults to the `ANTHROPIC_API_KEY` environment variable.
        base_url: Override of `https://api.anthropic.com` (proxies, fakes).
        price: USD per million tokens.
        timeout_s: Default attempt timeout.
        headers: Extra HTTP headers sent with every request (e.g. `anthropic-beta`).
        send_temperature: Send `temperature` (as an extra body field). Off by default: the
            installed SDK's Messages API has no sampling parameters any more, so the temperature
            is validated (0-1) but not sent unless a model or proxy still wants it.
    """

    kind = "anthropic"
    max_temperature = 1.0
    supported_options = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "top_p",
                                   "user"})
    """Mapped natively; `seed`, the penalties and `metadata` have no Anthropic equivalent and are
    refused before the call."""
    supports_images = True

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        price: Price | None = None,
        timeout_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        send_temperature: bool = False,
    ) -> None:
        super().__init__(provider, model, price=price, timeout_s=timeout_s)
        self._send_temperature = send_temperature
        if importlib.util.find_spec("anthropic") is None:
            raise ImportError(f"the anthropic adapter needs the Anthropic SDK: {_PIP}")
        self._api_key = api_key
        self._base_url = base_url
        self._headers = dict(headers) if headers else None
        self._client: AsyncAnthropic | None = None
        self._secrets = tuple(s for s in (api_key,) if s)

    def _warm(self) -> None:
        self._get_client()

    def _get_client(self) -> AsyncAnthropic:
        client = self._client
        if client is None:
            import anthropic

            # an explicit key keeps the SDK from searching profiles and federation settings
            key = self._key_or_env(self._api_key, "ANTHROPIC_API_KEY")
            client = self._client = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=self._base_url,
                default_headers=self._headers,
                max_retries=0,  # the router owns retries
                timeout=self.timeout_s,
            )
        return client

    async def _probe(self, timeout_s: float) -> None:
        await self._get_client().models.retrieve(self.model, timeout=timeout_s)

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # ------------------------------------------------------------- translate

    def _check_options(self, request: Request) -> None:
        super()._check_options(request)
        opts = request.options
        if opts.output is not None and opts.output.type == "json_object" and opts.tools:
            raise self._error(BadRequest, f"response_format json_object cannot be combined with tools on "
                                          f"{self.kind} model {self.model} (it is carried by a forced tool); "
                                          "use json_schema")

    def _params(self, request: Request) -> dict[str, Any]:
        params = request_params(self.model, request, send_temperature=self._send_temperature,
                                extra_body_fields=self.extra_body_fields)
        # explicit, so the SDK does not estimate a non-streaming timeout from max_tokens
        params["timeout"] = request.timeout_s
        return params

    async def _complete(self, request: Request) -> Reply:
        msg = await self._get_client().messages.create(**self._params(request))
        text, stop_reason, calls = reply_parts(msg, json_tool=_json_tool(request.options))
        usage = msg.usage
        input_tokens = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (
            usage.cache_read_input_tokens or 0
        )
        return Reply(text, self._usage(stop_reason, input_tokens, usage.output_tokens), calls)

    async def _stream(self, request: Request) -> AsyncIterator[str | ToolCallDelta | Usage]:
        stream = await self._get_client().messages.create(**self._params(request), stream=True)
        mapper = StreamMapper(json_tool=_json_tool(request.options))
        try:
            async for event in stream:
                for item in mapper.feed(event):
                    yield item
        finally:
            await stream.close()
        if not mapper.finished:
            raise self._error(ServerError, "stream ended before message_stop")
        yield self._usage(mapper.stop_reason, mapper.input_tokens, mapper.output_tokens)

    def _usage(self, stop_reason: str | None, input_tokens: int | None, output_tokens: int | None) -> Usage:
        if stop_reason == "refusal":
            raise self._error(ContentFiltered, "the model's safety system ended the turn (stop_reason: refusal)")
        return Usage(_FINISH.get(stop_reason or "", "other"), input_tokens, output_tokens)

    def _translate_error(self, exc: Exception) -> ProviderError | None:
        anthropic = sys.modules.get("anthropic")
        if anthropic is None or not isinstance(exc, anthropic.AnthropicError):
            return None
        if isinstance(exc, anthropic.APITimeoutError):
            return self._error(Timeout, "no answer within the timeout")
        if isinstance(exc, anthropic.APIConnectionError):
            return self._connection_error(exc)
        if isinstance(exc, anthropic.APIStatusError):
            err_type, message = _error_fields(exc.body, exc.message)
            status: int | None = exc.status_code
            if status is not None and status >= 400:
                cls = class_for_status(status)
            else:  # an `event: error` inside a 200 stream
                cls, status = _BY_TYPE.get(err_type, ServerError), None
            if cls is BadRequest and "prompt is too long" in message.lower():
                cls = ContextTooLong
            return self._error(cls, message, status=status, retry_after=parse_retry_after(exc.response.headers))
        if isinstance(exc, anthropic.APIError):
            return self._error(ServerError, f"malformed or unexpected response: {exc.message}")
        return self._error(AuthError if "credential" in str(exc).lower() else BadRequest, str(exc))


def _error_fields(body: object, fallback: str) -> tuple[str, str]:
    """(error.type, error.message) of an Anthropic error body."""
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            return str(err.get("type") or ""), str(err.get("message") or fallback)
    return "", fallback


# ---------------------------------------------------------------- pure mappings


def request_params(model: str, request: Request, *, send_temperature: bool = False,
                   extra_body_fields: Collection[str] = ()) -> dict[str, Any]:
    """The `messages.create` keyword arguments of a request (ours -> Anthropic), without timeout."""
    opts = request.options
    params: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens,
                              "messages": map_messages(request.turns)}
    system = request.system
    if system is not None:
        params["system"] = system
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    params.update(_tool_params(opts))
    if opts.output is not None and opts.output.type == "json_schema" and opts.output.schema is not None:
        params["output_config"] = {"format": {"type": "json_schema", "schema": dict(opts.output.schema)}}
    if opts.user is not None:
        params["metadata"] = {"user_id": opts.user}
    # the installed SDK has no sampling keywords any more: what the caller asked goes in the body
    extra: dict[str, Any] = {}
    if send_temperature:
        extra["temperature"] = request.temperature
    if opts.top_p is not None:
        extra["top_p"] = opts.top_p
    if opts.extra_body:
        extra.update((k, v) for k, v in opts.extra_body.items() if k in extra_body_fields)
    if extra:
        params["extra_body"] = extra
    return params


def _tool_params(opts: Options) -> dict[str, Any]:
    if opts.output is not None and opts.output.type == "json_object":
        forced = {"name": JSON_TOOL, "description": _JSON_TOOL_DESCRIPTION, "input_schema": {"type": "object"}}
        return {"tools": [forced], "tool_choice": {"type": "tool", "name": JSON_TOOL}}
    if not opts.tools:
        return {}
    tools: list[dict[str, Any]] = []
    for t in opts.tools:
        tool: dict[str, Any] = {"name": t.name, "input_schema": dict(t.parameters)}
        if t.description:
            tool["description"] = t.description
        if t.strict:
            tool["strict"] = True
        tools.append(tool)
    out: dict[str, Any] = {"tools": tools}
    choice = opts.tool_choice
    mode = choice.mode if choice is not None else "auto"
    choices: dict[str, dict[str, Any]] = {
        "auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"},
        "tool": {"type": "tool", "name": choice.name if choice else None},
    }
    vendor = choices[mode]
    if opts.parallel_tool_calls is False and mode != "none":
        vendor["disable_parallel_tool_use"] = True
    if choice is not None or "disable_parallel_tool_use" in vendor:
        out["tool_choice"] = vendor
    return out


def map_messages(turns: tuple[Message, ...]) -> list[dict[str, Any]]:
    """User, assistant and tool turns as Anthropic messages.

    Tool results become `tool_result` blocks of a user turn; consecutive results (answers to
    parallel calls) and a user message right after them share that one turn, as the API wants.
    """
    out: list[dict[str, Any]] = []
    merge = False  # the last message is a user turn holding tool results
    for m in turns:
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text}
            if merge:
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
                merge = True
            continue
        if m.role == "assistant":
            out.append({"role": "assistant", "content": _assistant_content(m)})
        elif merge:
            out[-1]["content"].extend(_user_blocks(m))
        else:
            out.append({"role": "user", "content": m.content if isinstance(m.content, str) else _user_blocks(m)})
        merge = False
    return out


def _assistant_content(m: Message) -> str | list[dict[str, Any]]:
    if not m.tool_calls:
        return m.text
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.text}] if m.text else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.args()} for c in m.tool_calls]
    return blocks


def _user_blocks(m: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in m.parts:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append({"type": "image", "source": _image_source(part)})
    return blocks


def _image_source(img: ImagePart) -> dict[str, Any]:
    if img.url is not None:
        return {"type": "url", "url": img.url}
    return {"type": "base64", "media_type": img.media_type, "data": img.data}


def _json_tool(opts: Options) -> str | None:
    return JSON_TOOL if opts.output is not None and opts.output.type == "json_object" else None


def _arguments(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def reply_parts(msg: AnthropicMessage, *, json_tool: str | None = None) -> tuple[str, str | None, tuple[ToolCall, ...]]:
    """(text, stop_reason, tool calls) of a Messages API answer (Anthropic -> ours).

    With `json_tool`, that forced tool's input is the answer: it becomes the text and the
    turn counts as a natural end (`end_turn`), not a tool call.
    """
    texts: list[str] = []
    calls: list[ToolCall] = []
    stop_reason = msg.stop_reason
    for block in msg.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            if block.name == json_tool:
                texts.append(_arguments(block.input))
            else:
                calls.append(ToolCall(block.id, block.name, _arguments(block.input)))
    if json_tool is not None and stop_reason == "tool_use":
        stop_reason = "end_turn"
    return "".join(texts), stop_reason, tuple(calls)


class StreamMapper:
    """Maps Messages API stream events to text pieces and `ToolCallDelta`s (Anthropic -> ours).

    Anthropic numbers content blocks across text and tool blocks; tool calls get their own
    indexes 0, 1, ... in order of first appearance. Usage and the stop reason are kept for
    the end of the stream.
    """

    __slots__ = ("_blocks", "_json_tool", "_tools", "finished", "input_tokens", "output_tokens", "stop_reason")

    def __init__(self, *, json_tool: str | None = None) -> None:
        self._json_tool = json_tool
        self._blocks: dict[int, int | None] = {}  # block index -> tool index (None: the JSON answer tool)
        self._tools = 0  # tool indexes handed out
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.finished = False

    def feed(self, event: RawMessageStreamEvent) -> list[str | ToolCallDelta]:
        """What one event contributes, in order."""
        if event.type == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [delta.text]
            if delta.type == "input_json_delta" and event.index in self._blocks:
                tool = self._blocks[event.index]
                if tool is None:
                    return [delta.partial_json]
                return [ToolCallDelta(tool, arguments=delta.partial_json)] if delta.partial_json else []
        elif event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                if block.name == self._json_tool:
                    self._blocks[event.index] = None
                    return []
                self._blocks[event.index] = index = self._tools
                self._tools += 1
                return [ToolCallDelta(index, block.id, block.name)]
        elif event.type == "message_start":
            u = event.message.usage
            self.input_tokens = u.input_tokens + (u.cache_creation_input_tokens or 0) + (
                u.cache_read_input_tokens or 0
            )
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason
            if self._json_tool is not None and self.stop_reason == "tool_use":
                self.stop_reason = "end_turn"
            self.output_tokens = event.usage.output_tokens
        elif event.type == "message_stop":
            self.finished = True
        return []
