"""Google Gemini (Developer API) through the official `google-genai` SDK (imported on first use)."""

from __future__ import annotations

import importlib.util
import json
import mimetypes
import re
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from adapters.base import LLMAdapter, Price, Reply, Request, Usage
from adapters.conversation import (
    ImagePart,
    Message,
    Options,
    TextPart,
    ToolCall,
    ToolCallDelta,
    synth_call_id,
)
from adapters.errors import (
    AuthError,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ProviderError,
    ServerError,
    class_for_status,
)

if TYPE_CHECKING:
    from google.genai import Client
    from google.genai.types import GenerateContentResponse, Part

__all__ = ["GeminiAdapter"]

_PIP = "pip install 'google-genai>=1.0'"
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
# finish reasons (and prompt block reasons) that mean the safety system withheld the answer
_FILTERED = frozenset(
    ("SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "MODEL_ARMOR",
     "JAILBREAK", "OTHER")
)
# GenerateContentConfig fields that are not generation settings the policy may pass through
_NOT_GENERATION = frozenset({"http_options", "should_return_http_response", "automatic_function_calling"})
_DELAY = re.compile(r"^\s*([0-9.]+)s\s*$")


class GeminiAdapter(LLMAdapter):
    """Gemini's `models/{model}:generateContent` and `:streamGenerateContent`.

    Args:
        provider: Provider name.
        model: Gemini model id.
        api_key: The key; defaults to `GEMINI_API_KEY` (or `GOOGLE_API_KEY`).
        base_url: Override of `https://generativelanguage.googleapis.com` (proxies, fakes).
        price: USD per million tokens.
        timeout_s: Default attempt timeout.
        api_version: API version path segment (the SDK's default when None).
        headers: Extra HTTP headers sent with every request.
    """

    kind = "gemini"
    max_temperature = 2.0
    max_stop_sequences = 5
    supported_options = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "top_p", "seed",
                                   "presence_penalty", "frequency_penalty"})
    """Mapped natively, but for `parallel_tool_calls=false`: Gemini has no such switch, so a turn
    keeps its first call only. `user` and `metadata` have no Gemini Developer API equivalent
    and are refused."""
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
        api_version: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(provider, model, price=price, timeout_s=timeout_s)
        if importlib.util.find_spec("google.genai") is None:
            raise ImportError(f"the gemini adapter needs the Google GenAI SDK: {_PIP}")
        self._api_key = api_key
        self._base_url = base_url
        self._api_version = api_version
        self._headers = dict(headers) if headers else None
        self._client: Client | None = None
        self._secrets = tuple(s for s in (api_key,) if s)

    def _warm(self) -> None:
        self._get_client()

    def _get_client(self) -> Client:
        client = self._client
        if client is None:
            from google import genai
            from google.genai import types

            key = self._key_or_env(self._api_key, "GEMINI_API_KEY", "GOOGLE_API_KEY")
            client = self._client = genai.Client(
                vertexai=False,
                api_key=key,
                http_options=types.HttpOptions(
                    base_url=self._base_url,
                    api_version=self._api_version,
                    headers=self._headers,
                    timeout=_ms(self.timeout_s),
                    retry_options=types.HttpRetryOptions(attempts=1),  # the router owns retries
                ),
            )
        return client

    async def _probe(self, timeout_s: float) -> None:
        await self._get_client().aio.models.get(model=self.model, config={"http_options": {"timeout": _ms(timeout_s)}})

    async def aclose(self) -> None:
        """Close the SDK's async client and its connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.aio.aclose()

    # ------------------------------------------------------------- translate

    def _call_args(self, request: Request) -> dict[str, Any]:
        args = call_args(self.model, request, extra_body_fields=self.extra_body_fields)
        if request.timeout_s != self.timeout_s:
            args["config"].setdefault("http_options", {})["timeout"] = _ms(request.timeout_s)
        return args

    async def _complete(self, request: Request) -> Reply:
        resp = await self._get_client().aio.models.generate_content(**self._call_args(request))
        parts, finish = self._read(resp)
        text, calls = reply_parts(parts, salt=resp.response_id or "")
        if request.options.parallel_tool_calls is False:
            calls = calls[:1]
        return Reply(text, self._usage(_finish(finish, bool(calls)), resp), calls)

    async def _stream(self, request: Request) -> AsyncIterator[str | ToolCallDelta | Usage]:
        stream = await self._get_client().aio.models.generate_content_stream(**self._call_args(request))
        mapper = StreamMapper()
        single = request.options.parallel_tool_calls is False
        finish: str | None = None
        last: GenerateContentResponse | None = None
        blocked: ProviderError | None = None
        async with aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                if blocked is not None:
                    continue  # read to the end: the SDK leaves its response open when left early
                try:
                    parts, chunk_finish = self._read(chunk)
                except ContentFiltered as exc:
                    blocked = exc
                    continue
                for item in mapper.feed(parts, chunk.response_id or ""):
                    if not (single and isinstance(item, ToolCallDelta) and item.index > 0):
                        yield item
                if chunk_finish:
                    finish = chunk_finish
                if chunk.usage_metadata is not None:
                    last = chunk
        if blocked is not None:
            raise blocked
        if finish is None:
            raise self._error(ServerError, "stream ended without a finish reason")
        yield self._usage(_finish(finish, mapper.calls > 0), last)

    def _read(self, resp: GenerateContentResponse) -> tuple[list[Part], str | None]:
        """Parts and finish reason of one response (or chunk); raises ContentFiltered on a block."""
        feedback = resp.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum_name(feedback.block_reason)
            raise self._error(ContentFiltered, f"the prompt was blocked (blockReason: {reason})")
        if not resp.candidates:
            return [], None
        cand = resp.candidates[0]
        finish = _enum_name(cand.finish_reason) if cand.finish_reason is not None else None
        if finish in _FILTERED:
            raise self._error(ContentFiltered, f"the answer was withheld (finishReason: {finish})")
        parts = cand.content.parts if cand.content is not None and cand.content.parts else []
        return list(parts), finish

    @staticmethod
    def _usage(reason: str, resp: GenerateContentResponse | None) -> Usage:
        meta = resp.usage_metadata if resp is not None else None
        if meta is None:
            return Usage(reason, None, None)
        input_tokens = (meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0)
        # thinking tokens are billed as output
        output_tokens = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
        return Usage(reason, input_tokens, output_tokens)

    def _translate_error(self, exc: Exception) -> ProviderError | None:
        errors = sys.modules.get("google.genai.errors")
        if errors is not None and isinstance(exc, errors.APIError):
            status = exc.code if isinstance(exc.code, int) else None
            message = str(exc.message or exc)
            details = _details(exc.details)
            cls = class_for_status(status) if status is not None and status >= 400 else ServerError
            if cls is BadRequest:
                lowered = message.lower()
                if any(d.get("reason") == "API_KEY_INVALID" for d in details) or "api key not valid" in lowered:
                    cls = AuthError
                elif "input token count" in lowered or "exceeds the maximum number of tokens" in lowered:
                    cls = ContextTooLong
            return self._error(cls, message, status=status, retry_after=_retry_delay(details))
        if errors is not None and isinstance(exc, errors.UnknownApiResponseError):
            return self._error(ServerError, f"malformed response: {exc}")
        pydantic = sys.modules.get("pydantic")
        if pydantic is not None and isinstance(exc, pydantic.ValidationError):
            return self._error(ServerError, f"unexpected response shape: {exc.error_count()} validation errors")
        return None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _enum_name(value: object) -> str:
    name = getattr(value, "value", value)
    return str(name)


def _details(body: object) -> list[Mapping[str, Any]]:
    """The `error.details` entries of a Google API error body."""
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and isinstance(err.get("details"), list):
            return [d for d in err["details"] if isinstance(d, Mapping)]
    return []


def _retry_delay(details: list[Mapping[str, Any]]) -> float | None:
    for d in details:
        if str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DELAY.match(str(d.get("retryDelay", "")))
            if m:
                return float(m[1])
    return None


# ---------------------------------------------------------------- pure mappings


def call_args(model: str, request: Request, *, extra_body_fields: Collection[str] = ()) -> dict[str, Any]:
    """The `generate_content` keyword arguments of a request (ours -> Gemini), without timeout."""
    opts = request.options
    config: dict[str, Any] = {"temperature": request.temperature, "max_output_tokens": request.max_tokens}
    system = request.system
    if system is not None:
        config["system_instruction"] = system
    if request.stop:
        config["stop_sequences"] = list(request.stop)
    for name in ("top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(opts, name)
        if value is not None:
            config[name] = value
    if opts.output is not None and opts.output.type != "text":
        config["response_mime_type"] = "application/json"
        if opts.output.type == "json_schema" and opts.output.schema is not None:
            config["response_json_schema"] = _json_schema(opts.output.schema)
    config.update(_tool_config(opts))
    if opts.extra_body:
        from google.genai import types

        # a generation setting (top_k, candidate_count, ...) goes in the config, which the SDK
        # writes as generationConfig; any other field is merged into the body as it is
        top: dict[str, Any] = {}
        for k, v in opts.extra_body.items():
            if k not in extra_body_fields:
                continue
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower()
            if snake in types.GenerateContentConfig.model_fields and snake not in _NOT_GENERATION:
                config[snake] = v
            else:
                top[k] = v
        if top:
            config["http_options"] = {"extra_body": top}
    return {"model": model, "contents": map_contents(request.turns), "config": config}


def _tool_config(opts: Options) -> dict[str, Any]:
    if not opts.tools:
        return {}
    # parametersJsonSchema takes the JSON Schema as given: no conversion to Gemini's Schema subset
    decls: list[dict[str, Any]] = []
    for t in opts.tools:
        decl: dict[str, Any] = {"name": t.name, "parameters_json_schema": _json_schema(t.parameters)}
        if t.description:
            decl["description"] = t.description
        decls.append(decl)
    out: dict[str, Any] = {"tools": [{"function_declarations": decls}]}
    choice = opts.tool_choice
    if choice is not None:
        calling: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}[
            choice.mode]}
        if choice.mode == "tool" and choice.name is not None:
            calling["allowed_function_names"] = [choice.name]
        out["tool_config"] = {"function_calling_config": calling}
    return out


def _json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    # Gemini's JSON Schema subset has no `$schema` (generators such as zod-to-json-schema add it)
    return {k: v for k, v in schema.items() if k != "$schema"}


def map_contents(turns: tuple[Message, ...]) -> list[dict[str, Any]]:
    """User, assistant and tool turns as Gemini contents.

    A tool result becomes a `function_response` part named after the call it answers;
    consecutive results (answers to parallel calls) share one user turn, as Gemini wants.
    """
    names: dict[str, str] = {}  # call id -> tool name, from the assistant turns
    out: list[dict[str, Any]] = []
    merge = False  # the last content is a user turn of function responses
    for m in turns:
        if m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "", "")
            part = {"function_response": {"name": name, "response": _result_object(m.text)}}
            if merge:
                out[-1]["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
                merge = True
            continue
        merge = False
        if m.role == "assistant":
            parts: list[dict[str, Any]] = [{"text": m.text}] if m.text or not m.tool_calls else []
            for c in m.tool_calls:
                names[c.id] = c.name
                parts.append({"function_call": {"name": c.name, "args": c.args()}})
            out.append({"role": "model", "parts": parts})
        else:
            out.append({"role": "user", "parts": [_user_part(p) for p in m.parts]})
    return out


def _user_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if part.url is None:
        return {"inline_data": {"mime_type": part.media_type, "data": part.data}}
    file: dict[str, Any] = {"file_uri": part.url}
    mime, _ = mimetypes.guess_type(part.url.split("?", 1)[0])
    if mime is not None:
        file["mime_type"] = mime
    return {"file_data": file}


def _result_object(text: str) -> dict[str, Any]:
    """A tool result as the object Gemini's functionResponse.response must be."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _arguments(args: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(args or {}), ensure_ascii=False, separators=(",", ":"))


def _finish(finish: str | None, called: bool) -> str:
    # Gemini ends a turn that calls functions with STOP, like any other
    if called and finish == "STOP":
        return "tool_calls"
    return _FINISH.get(finish or "", "other")


def reply_parts(parts: list[Part], *, salt: str = "") -> tuple[str, tuple[ToolCall, ...]]:
    """(text, tool calls) of a response's parts (Gemini -> ours); thought parts are skipped.

    Gemini gives calls no id (the Developer API): a stable one is made from the response id,
    the tool name and the call's index.
    """
    texts: list[str] = []
    calls: list[ToolCall] = []
    for p in parts:
        if p.function_call is not None:
            fc = p.function_call
            name = fc.name or ""
            calls.append(ToolCall(fc.id or synth_call_id(name, len(calls), salt), name, _arguments(fc.args)))
        elif p.text and not p.thought:
            texts.append(p.text)
    return "".join(texts), tuple(calls)


class StreamMapper:
    """Maps streamed chunks' parts to text pieces and `ToolCallDelta`s (Gemini -> ours).

    Gemini sends each function call whole in one chunk: it becomes one delta with id, name
    and all its arguments; indexes count calls only, 0, 1, ... in order.
    """

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0
        """Tool calls seen so far."""

    def feed(self, parts: list[Part], salt: str = "") -> list[str | ToolCallDelta]:
        """What one chunk's parts contribute, in order."""
        out: list[str | ToolCallDelta] = []
        for p in parts:
            if p.function_call is not None:
                fc = p.function_call
                name = fc.name or ""
                out.append(ToolCallDelta(self.calls, fc.id or synth_call_id(name, self.calls, salt), name,
                                         _arguments(fc.args)))
                self.calls += 1
            elif p.text and not p.thought:
                out.append(p.text)
        return out
