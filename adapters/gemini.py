"""Google Gemini (Developer API) through the official `google-genai` SDK (imported on first use)."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from adapters.base import LLMAdapter, Price, Reply, Request, Usage
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
    from google.genai.types import GenerateContentResponse

__all__ = ["GeminiAdapter"]

_PIP = "pip install 'google-genai>=1.0'"
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
# finish reasons (and prompt block reasons) that mean the safety system withheld the answer
_FILTERED = frozenset(
    ("SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "MODEL_ARMOR",
     "JAILBREAK", "OTHER")
)
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
        config: dict[str, Any] = {"temperature": request.temperature, "max_output_tokens": request.max_tokens}
        system = request.system
        if system is not None:
            config["system_instruction"] = system
        if request.stop:
            config["stop_sequences"] = list(request.stop)
        if request.timeout_s != self.timeout_s:
            config["http_options"] = {"timeout": _ms(request.timeout_s)}
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in request.turns
        ]
        return {"model": self.model, "contents": contents, "config": config}

    async def _complete(self, request: Request) -> Reply:
        resp = await self._get_client().aio.models.generate_content(**self._call_args(request))
        text, finish = self._read(resp)
        return Reply(text, self._usage(finish, resp))

    async def _stream(self, request: Request) -> AsyncIterator[str | Usage]:
        stream = await self._get_client().aio.models.generate_content_stream(**self._call_args(request))
        finish: str | None = None
        last: GenerateContentResponse | None = None
        blocked: ProviderError | None = None
        async with aclosing(stream):  # type: ignore[type-var]
            async for chunk in stream:
                if blocked is not None:
                    continue  # read to the end: the SDK leaves its response open when left early
                try:
                    text, chunk_finish = self._read(chunk)
                except ContentFiltered as exc:
                    blocked = exc
                    continue
                if text:
                    yield text
                if chunk_finish:
                    finish = chunk_finish
                if chunk.usage_metadata is not None:
                    last = chunk
        if blocked is not None:
            raise blocked
        if finish is None:
            raise self._error(ServerError, "stream ended without a finish reason")
        yield self._usage(finish, last)

    def _read(self, resp: GenerateContentResponse) -> tuple[str, str | None]:
        """Text and finish reason of one response (or chunk); raises ContentFiltered on a block."""
        feedback = resp.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum_name(feedback.block_reason)
            raise self._error(ContentFiltered, f"the prompt was blocked (blockReason: {reason})")
        if not resp.candidates:
            return "", None
        cand = resp.candidates[0]
        finish = _enum_name(cand.finish_reason) if cand.finish_reason is not None else None
        if finish in _FILTERED:
            raise self._error(ContentFiltered, f"the answer was withheld (finishReason: {finish})")
        parts = cand.content.parts if cand.content is not None and cand.content.parts else []
        return "".join(p.text for p in parts if p.text and not p.thought), finish

    @staticmethod
    def _usage(finish: str | None, resp: GenerateContentResponse | None) -> Usage:
        reason = _FINISH.get(finish or "", "other")
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
