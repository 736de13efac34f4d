"""Each vendor's wire format, as the fakes speak it: request parsing, JSON answers, SSE streams
and error bodies in the shapes the real APIs use.

The reply is deterministic and echo-derived (`Echo from MODEL: <last user message>`), cut at
`max_tokens * 4` characters ("length") or at the first stop sequence; token counts are
ceil(chars / 4) per message, so tests can predict them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tests.fakes.faults import Fault
from tests.fakes.surface import Surface, ToolOffer, answer

__all__ = ["ANTHROPIC", "GEMINI", "OPENAI", "Parsed", "Reply", "Vendor", "make_reply", "tokens"]

_PIECES = re.compile(r"\S*\s*")
Headers = list[tuple[bytes, bytes]]


def tokens(text: str) -> int:
    """The fakes' token count: ceil(len / 4)."""
    return (len(text) + 3) // 4


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the fakes need from a request, whatever the vendor."""

    model: str
    texts: tuple[str, ...]
    last_user: str
    max_tokens: int
    stop: tuple[str, ...]
    include_usage: bool = True
    surface: Surface | None = None  # tool calls / a text other than the echo (tests.fakes.surface)

    @property
    def input_tokens(self) -> int:
        return sum(tokens(t) for t in self.texts)


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    finish: str  # "stop" | "length" | "stop_sequence" | "tool_calls"
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    calls: tuple[tuple[str, str], ...] = ()  # (tool name, arguments JSON) when the model calls tools

    @property
    def pieces(self) -> list[str]:
        return [p for p in _PIECES.findall(self.text) if p]


def make_reply(parsed: Parsed) -> Reply:
    """The deterministic answer to a request."""
    surface = parsed.surface
    if surface is not None and surface.calls:
        out = sum(tokens(name + args) for name, args in surface.calls)
        return Reply("", "tool_calls", None, parsed.input_tokens, out, surface.calls)
    text = f"Echo from {parsed.model}: {parsed.last_user}"
    if surface is not None:
        text = (text if surface.text is None else surface.text) + (
            f" [images: {surface.images}]" if surface.images else "")
    finish, matched = "stop", None
    for s in parsed.stop:
        at = text.find(s)
        if at >= 0:
            text, finish, matched = text[:at], "stop_sequence", s
    limit = max(1, parsed.max_tokens) * 4
    if len(text) > limit:
        text, finish, matched = text[:limit], "length", None
    return Reply(text, finish, matched, parsed.input_tokens, tokens(text))


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _retry_headers(fault: Fault) -> Headers:
    return [(b"retry-after", f"{fault.retry_after:g}".encode())] if fault.retry_after is not None else []


class Vendor:
    """Base of one vendor's protocol."""

    name: str

    def parse(self, body: dict[str, Any], path_model: str | None) -> Parsed:
        raise NotImplementedError

    def ok(self, parsed: Parsed, reply: Reply, n: int) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, parsed: Parsed, reply: Reply, n: int) -> list[bytes]:
        raise NotImplementedError

    def error(self, fault: Fault, parsed: Parsed | None, key: str | None) -> tuple[int, Headers, dict[str, Any]]:
        """Status, extra headers and JSON body of the error answer for `fault`."""
        raise NotImplementedError

    def stream_error(self, fault: Fault) -> bytes:
        raise NotImplementedError

    def malformed_stream(self) -> list[bytes]:
        """A stream whose first event's data is not JSON."""
        return [b'data: {"id": "chunk", "choices": [\n\n', b"data: not json\n\n"]

    def blocked(self, parsed: Parsed, n: int, stream: bool) -> tuple[dict[str, Any] | None, list[bytes]]:
        """A content-filter answer given as a 200 (vendors that do so), else (None, [])."""
        return None, []


class _OpenAI(Vendor):
    name = "openai"

    def parse(self, body: dict[str, Any], path_model: str | None) -> Parsed:
        msgs = body.get("messages") or []
        texts = tuple(_content_text(m.get("content")) for m in msgs)
        last_user = next((_content_text(m.get("content")) for m in reversed(msgs) if m.get("role") == "user"), "")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 4096
        stop = body.get("stop") or ()
        opts = body.get("stream_options") or {}
        return Parsed(
            body.get("model", ""), texts, last_user, int(max_tokens), (stop,) if isinstance(stop, str) else tuple(stop),
            bool(opts.get("include_usage")), _openai_surface(body, msgs, last_user),
        )

    def ok(self, parsed: Parsed, reply: Reply, n: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.calls:
            message["content"] = None
            message["tool_calls"] = [
                {"id": f"call_{i + 1}", "type": "function", "function": {"name": name, "arguments": args}}
                for i, (name, args) in enumerate(reply.calls)
            ]
        return {
            "id": f"chatcmpl-fake{n}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": parsed.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _openai_finish(reply),
                }
            ],
            "usage": _openai_usage(reply),
            "system_fingerprint": "fp_fake",
        }

    def stream(self, parsed: Parsed, reply: Reply, n: int) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            data: dict[str, Any] = {
                "id": f"chatcmpl-fake{n}", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": parsed.model, "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if parsed.include_usage:
                data["usage"] = None
            return sse(data)

        events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        events += [chunk({"content": p}, None) for p in reply.pieces]
        for i, (name, args) in enumerate(reply.calls):
            events.append(chunk({"tool_calls": [{"index": i, "id": f"call_{i + 1}", "type": "function",
                                                 "function": {"name": name, "arguments": ""}}]}, None))
            events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}, None)
                       for frag in _fragments(args)]
        events.append(chunk({}, _openai_finish(reply)))
        if parsed.include_usage:
            events.append(sse({
                "id": f"chatcmpl-fake{n}", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": parsed.model, "choices": [], "usage": _openai_usage(reply),
            }))
        events.append(b"data: [DONE]\n\n")
        return events

    def error(self, fault: Fault, parsed: Parsed | None, key: str | None) -> tuple[int, Headers, dict[str, Any]]:
        def err(message: str, type_: str | None, code: str | None, param: str | None = None) -> dict[str, Any]:
            return {"error": {"message": message, "type": type_, "param": param, "code": code}}

        k = fault.kind
        if k == "rate_limit":
            return 429, _retry_headers(fault) + [(b"x-ratelimit-remaining-requests", b"0")], err(
                "Rate limit reached for requests on fake-org: Limit 3, Used 3, Requested 1. Please try again in 1s.",
                "requests", "rate_limit_exceeded",
            )
        if k == "server_error":
            return 500, [], err(
                "The server had an error while processing your request. Sorry about that!", "server_error", None
            )
        if k in ("unavailable", "overloaded"):
            return 503, _retry_headers(fault) if k == "overloaded" else [], err(
                "The engine is currently overloaded, please try again later.", "server_error", None
            )
        if k == "context_length":
            n_in = parsed.input_tokens if parsed else 0
            return 400, [], err(
                f"This model's maximum context length is 1000 tokens. However, your messages resulted in {n_in} "
                "tokens. Please reduce the length of the messages.",
                "invalid_request_error", "context_length_exceeded", "messages",
            )
        if k == "content_filter":
            body = err(
                "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
                "Please modify your prompt and retry.", None, "content_filter", "prompt",
            )
            body["error"]["status"] = 400
            body["error"]["innererror"] = {"code": "ResponsibleAIPolicyViolation",
                                           "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}}
            return 400, [], body
        if k == "auth":
            # worse than the real API, which masks most of the key: the adapter must scrub it
            return 401, [], err(
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key",
            )
        return 400, [], err("Unrecognized request argument supplied: frobnicate", "invalid_request_error", None)

    def stream_error(self, fault: Fault) -> bytes:
        return sse({"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": None, "code": None}})


def _openai_finish(reply: Reply) -> str:
    return {"length": "length", "tool_calls": "tool_calls"}.get(reply.finish, "stop")


def _fragments(args: str) -> list[str]:
    """A call's arguments in two pieces, as vendors stream them (never all at once)."""
    half = max(1, len(args) // 2)
    return [args[:half], args[half:]]


def _openai_surface(body: dict[str, Any], msgs: list[Any], last_user: str) -> Surface | None:
    """The neutral facts of an OpenAI request, answered by `tests.fakes.surface.answer`."""
    tools = [ToolOffer(t["function"]["name"], t["function"].get("parameters") or {})
             for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    raw_choice = body.get("tool_choice")
    choice = raw_choice["function"]["name"] if isinstance(raw_choice, dict) else raw_choice
    result: tuple[str, str] | None = None
    if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "tool":
        called = {c.get("id"): c.get("function", {}).get("name", "")
                  for m in msgs if isinstance(m, dict) for c in m.get("tool_calls") or ()}
        result = (called.get(msgs[-1].get("tool_call_id"), ""), _content_text(msgs[-1].get("content")))
    fmt = body.get("response_format") or {}
    images = sum(1 for m in msgs if isinstance(m, dict) and isinstance(m.get("content"), list)
                 for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url")
    return answer(tools=tools, choice=choice, parallel=body.get("parallel_tool_calls"), last_user=last_user,
                  tool_result=result, output=fmt.get("type"),
                  schema=(fmt.get("json_schema") or {}).get("schema"), images=images)


def _openai_usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _json_fragments(args: str) -> list[str]:
    """A call's arguments JSON in two pieces (vendors that stream them never send them whole)."""
    half = max(1, len(args) // 2)
    return [args[:half], args[half:]]


def _anthropic_surface(body: dict[str, Any], msgs: list[Any], last_user: str) -> Surface | None:
    """The neutral facts of a Messages API request, answered by `tests.fakes.surface.answer`."""
    tools = [ToolOffer(t["name"], t.get("input_schema") or {}) for t in body.get("tools") or ()
             if isinstance(t, dict) and "name" in t]
    tc = body.get("tool_choice") or {}
    choice = {"any": "required", "none": "none", "tool": tc.get("name")}.get(str(tc.get("type")), "auto")
    forced = next((t for t in tools if t.name == choice), None)
    if forced is not None and "properties" not in forced.parameters:
        # a forced tool with a free-form input is how clients ask Claude for any JSON object:
        # answer it as json_object
        return Surface(((forced.name, json.dumps({"echo": last_user}, ensure_ascii=False, separators=(",", ":"))),))
    result: tuple[str, str] | None = None
    last = msgs[-1] if msgs and isinstance(msgs[-1], dict) else {}
    blocks = last.get("content") if last.get("role") == "user" else None
    # the turn is a tool result when it ends with one (text after the results is a new question)
    if isinstance(blocks, list) and blocks and isinstance(blocks[-1], dict) and blocks[-1].get("type") == "tool_result":
        called = {b.get("id"): b.get("name", "") for m in msgs if isinstance(m, dict)
                  and isinstance(m.get("content"), list) for b in m["content"]
                  if isinstance(b, dict) and b.get("type") == "tool_use"}
        content = blocks[-1].get("content")
        result = (called.get(blocks[-1].get("tool_use_id"), ""),
                  content if isinstance(content, str) else _content_text(content))
    fmt = (body.get("output_config") or {}).get("format") or {}
    images = sum(1 for m in msgs if isinstance(m, dict) and isinstance(m.get("content"), list)
                 for b in m["content"] if isinstance(b, dict) and b.get("type") == "image")
    return answer(tools=tools, choice=choice, parallel=not tc.get("disable_parallel_tool_use"), last_user=last_user,
                  tool_result=result, output=fmt.get("type"), schema=fmt.get("schema"), images=images)


class _Anthropic(Vendor):
    name = "anthropic"

    def parse(self, body: dict[str, Any], path_model: str | None) -> Parsed:
        msgs = body.get("messages") or []
        system = body.get("system")
        texts = ((_content_text(system),) if system else ()) + tuple(_content_text(m.get("content")) for m in msgs)
        last_user = next((_content_text(m.get("content")) for m in reversed(msgs) if m.get("role") == "user"), "")
        return Parsed(
            body.get("model", ""), texts, last_user, int(body.get("max_tokens") or 0),
            tuple(body.get("stop_sequences") or ()), surface=_anthropic_surface(body, msgs, last_user),
        )

    def _stop_reason(self, reply: Reply) -> str:
        return {"length": "max_tokens", "stop_sequence": "stop_sequence", "tool_calls": "tool_use"}.get(
            reply.finish, "end_turn")

    def _usage(self, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {"input_tokens": input_tokens, "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}

    def _uses(self, reply: Reply, n: int) -> list[dict[str, Any]]:
        """The reply's tool calls as tool_use blocks."""
        return [{"type": "tool_use", "id": f"toolu_fake{n}_{i}", "name": name, "input": json.loads(args)}
                for i, (name, args) in enumerate(reply.calls)]

    def ok(self, parsed: Parsed, reply: Reply, n: int, stop_reason: str | None = None) -> dict[str, Any]:
        uses = self._uses(reply, n) if stop_reason is None else []
        return {
            "id": f"msg_fake{n}", "type": "message", "role": "assistant", "model": parsed.model,
            "content": ([{"type": "text", "text": reply.text}] if reply.text else []) + uses,
            "stop_reason": stop_reason or self._stop_reason(reply), "stop_sequence": reply.stop_sequence,
            "usage": self._usage(reply.input_tokens, reply.output_tokens),
        }

    def stream(self, parsed: Parsed, reply: Reply, n: int, stop_reason: str | None = None) -> list[bytes]:
        uses = self._uses(reply, n) if stop_reason is None else []
        start = self.ok(parsed, reply, n, stop_reason="end_turn")
        start.update(content=[], stop_reason=None, stop_sequence=None,
                     usage=self._usage(reply.input_tokens, 1))
        if uses:
            return [sse({"type": "message_start", "message": start}, "message_start"),
                    *self._tool_events(uses), *self._end_events(reply, stop_reason)]
        events = [
            sse({"type": "message_start", "message": start}, "message_start"),
            sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start"),
            sse({"type": "ping"}, "ping"),
        ]
        events += [
            sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                "content_block_delta")
            for p in reply.pieces
        ]
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        return events + self._end_events(reply, stop_reason)

    def _end_events(self, reply: Reply, stop_reason: str | None) -> list[bytes]:
        return [
            sse({"type": "message_delta",
                 "delta": {"stop_reason": stop_reason or self._stop_reason(reply),
                           "stop_sequence": reply.stop_sequence},
                 "usage": {"output_tokens": reply.output_tokens}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]

    def _tool_events(self, uses: list[dict[str, Any]]) -> list[bytes]:
        """Each tool_use block streamed: its start (empty input), its input JSON in fragments, its stop."""
        events: list[bytes] = []
        for i, use in enumerate(uses):
            events.append(sse({"type": "content_block_start", "index": i,
                               "content_block": {**use, "input": {}}}, "content_block_start"))
            events += [sse({"type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": frag}}, "content_block_delta")
                       for frag in _json_fragments(json.dumps(use["input"]))]
            events.append(sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
        return events

    def error(self, fault: Fault, parsed: Parsed | None, key: str | None) -> tuple[int, Headers, dict[str, Any]]:
        def err(type_: str, message: str) -> dict[str, Any]:
            return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_fake"}

        k = fault.kind
        if k == "rate_limit":
            return 429, _retry_headers(fault), err(
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute.",
            )
        if k == "server_error":
            return 500, [], err("api_error", "Internal server error")
        if k == "unavailable":
            return 503, [], err("api_error", "Service unavailable")
        if k == "overloaded":
            return 529, _retry_headers(fault), err("overloaded_error", "Overloaded")
        if k == "context_length":
            n_in = parsed.input_tokens if parsed else 0
            return 400, [], err("invalid_request_error", f"prompt is too long: {n_in} tokens > 1000 maximum")
        if k == "auth":
            return 401, [], err("authentication_error", f"invalid x-api-key: {key}")
        return 400, [], err("invalid_request_error", "messages.0.content: Field required")

    def stream_error(self, fault: Fault) -> bytes:
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")

    def malformed_stream(self) -> list[bytes]:
        return [b'event: message_start\ndata: {"type": "message_start", "message": {\n\n']

    def blocked(self, parsed: Parsed, n: int, stream: bool) -> tuple[dict[str, Any] | None, list[bytes]]:
        # Claude's safety classifiers end the turn with stop_reason "refusal"
        reply = Reply("", "stop", None, parsed.input_tokens, 0)
        if stream:
            return None, self.stream(parsed, reply, n, stop_reason="refusal")
        return self.ok(parsed, reply, n, stop_reason="refusal"), []


class _Gemini(Vendor):
    name = "gemini"

    def parse(self, body: dict[str, Any], path_model: str | None) -> Parsed:
        contents = body.get("contents") or []
        texts = [_parts_text(c.get("parts")) for c in contents]
        system = body.get("systemInstruction") or body.get("system_instruction")
        if system:
            texts.insert(0, _parts_text(system.get("parts")))
        last_user = next((_parts_text(c.get("parts")) for c in reversed(contents) if c.get("role", "user") == "user"),
                         "")
        config = body.get("generationConfig") or {}
        return Parsed(
            path_model or "", tuple(texts), last_user, int(config.get("maxOutputTokens") or 8192),
            tuple(config.get("stopSequences") or ()), surface=_gemini_surface(body, contents, last_user),
        )

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {"promptTokenCount": reply.input_tokens, "candidatesTokenCount": reply.output_tokens,
                "totalTokenCount": reply.input_tokens + reply.output_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}]}

    def _chunk(self, parsed: Parsed, text: str, finish: str | None, n: int,
               usage: dict[str, Any] | None, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": parts or [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        data: dict[str, Any] = {"candidates": [cand], "modelVersion": parsed.model, "responseId": f"fake{n}"}
        if usage is not None:
            data["usageMetadata"] = usage
        return data

    def ok(self, parsed: Parsed, reply: Reply, n: int) -> dict[str, Any]:
        calls = [(name, json.loads(args)) for name, args in reply.calls]
        finish = "MAX_TOKENS" if reply.finish == "length" else "STOP"
        # Gemini ends a turn of function calls with STOP and gives the calls no id
        parts = [{"functionCall": {"name": name, "args": args}} for name, args in calls]
        return self._chunk(parsed, reply.text, finish, n, self._usage(reply), parts)

    def stream(self, parsed: Parsed, reply: Reply, n: int) -> list[bytes]:
        calls = [(name, json.loads(args)) for name, args in reply.calls]
        if calls:  # each call whole, one chunk each; the last chunk ends the turn
            partial = {"promptTokenCount": reply.input_tokens, "totalTokenCount": reply.input_tokens}
            return [sse(self._chunk(parsed, "", "STOP" if i == len(calls) - 1 else None, n,
                                    self._usage(reply) if i == len(calls) - 1 else partial,
                                    [{"functionCall": {"name": name, "args": args}}]))
                    for i, (name, args) in enumerate(calls)]
        pieces = reply.pieces or [""]
        finish = "MAX_TOKENS" if reply.finish == "length" else "STOP"
        partial = {"promptTokenCount": reply.input_tokens, "totalTokenCount": reply.input_tokens}
        events = [sse(self._chunk(parsed, p, None, n, partial)) for p in pieces[:-1]]
        events.append(sse(self._chunk(parsed, pieces[-1], finish, n, self._usage(reply))))
        return events

    def error(self, fault: Fault, parsed: Parsed | None, key: str | None) -> tuple[int, Headers, dict[str, Any]]:
        def err(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {"code": code, "message": message, "status": status}
            if details:
                body["details"] = details
            return {"error": body}

        k = fault.kind
        if k == "rate_limit":
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{fault.retry_after:g}s"}] \
                if fault.retry_after is not None else None
            return 429, [], err(429, "RESOURCE_EXHAUSTED",
                                "You exceeded your current quota, please check your plan and billing details.", details)
        if k == "server_error":
            return 500, [], err(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                                "https://developers.generativeai.google/guide/troubleshooting")
        if k in ("unavailable", "overloaded"):
            return 503, [], err(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if k == "context_length":
            n_in = parsed.input_tokens if parsed else 0
            return 400, [], err(400, "INVALID_ARGUMENT",
                                f"The input token count ({n_in}) exceeds the maximum number of tokens allowed (1000).")
        if k == "auth":
            return 400, [], err(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
            ])
        return 400, [], err(400, "INVALID_ARGUMENT",
                            'Invalid JSON payload received. Unknown name "frobnicate": Cannot find field.')

    def stream_error(self, fault: Fault) -> bytes:
        return sse({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                              "status": "UNAVAILABLE"}})

    def blocked(self, parsed: Parsed, n: int, stream: bool) -> tuple[dict[str, Any] | None, list[bytes]]:
        body = {
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
            "usageMetadata": {"promptTokenCount": parsed.input_tokens, "totalTokenCount": parsed.input_tokens},
            "modelVersion": parsed.model, "responseId": f"fake{n}",
        }
        return (None, [sse(body)]) if stream else (body, [])


def _g(d: Any, camel: str) -> Any:
    """Field `camel` of a Gemini JSON object, also under its proto name: the API accepts both, and
    google-genai sends nested fields snake_case (`parameters_json_schema`, `mime_type`)."""
    if not isinstance(d, dict):
        return None
    if camel in d:
        return d[camel]
    return d.get(re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower())


def _gemini_surface(body: dict[str, Any], contents: list[Any], last_user: str) -> Surface | None:
    """The neutral facts of a generateContent request, answered by `tests.fakes.surface.answer`."""
    decls = [d for t in _g(body, "tools") or [] for d in (_g(t, "functionDeclarations") or [])]
    tools = [ToolOffer(d["name"], _g(d, "parametersJsonSchema") or _g(d, "parameters") or {}) for d in decls]
    calling = _g(_g(body, "toolConfig"), "functionCallingConfig") or {}
    allowed = _g(calling, "allowedFunctionNames") or []
    if allowed:
        tools = [t for t in tools if t.name in allowed]
    choice = {"ANY": "required", "NONE": "none"}.get(_g(calling, "mode") or "AUTO", "auto")
    if choice == "required" and len(allowed) == 1:
        choice = allowed[0]
    result: tuple[str, str] | None = None
    last = contents[-1] if contents and isinstance(contents[-1], dict) else {}
    responses = [_g(p, "functionResponse") for p in last.get("parts") or [] if _g(p, "functionResponse")]
    if last.get("role", "user") == "user" and responses:
        response = responses[-1].get("response") or {}
        value = response["result"] if set(response) == {"result"} else response
        result = (str(responses[-1].get("name", "")), value if isinstance(value, str) else json.dumps(value))
    config = _g(body, "generationConfig") or {}
    schema = _g(config, "responseJsonSchema") or _g(config, "responseSchema")
    output = None
    if _g(config, "responseMimeType") == "application/json":
        output = "json_schema" if schema else "json_object"
    images = sum(1 for c in contents if isinstance(c, dict) for p in c.get("parts") or []
                 if _g(p, "inlineData") or _g(p, "fileData"))
    # Gemini has no switch for parallel calls
    return answer(tools=tools, choice=choice, last_user=last_user, tool_result=result, output=output,
                  schema=schema, images=images)


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


OPENAI = _OpenAI()
ANTHROPIC = _Anthropic()
GEMINI = _Gemini()
