"""The lean HTTP transport (`transport: http`) against the SDK path, its reference.

Over the fake vendor (the wire): the same request bytes, the same completions, the same error
for every fault. Over a tiny aiohttp server on 127.0.0.1 that answers what it is told: responses
the fake does not produce (odd bodies, odd SSE framing, redirects), still compared with what the
SDK path does over the same wire.
The contract suite (`test_contract.py`) runs every other assertion over this transport too.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from syrupy.assertion import SnapshotAssertion

from adapters import (
    AuthError,
    BadRequest,
    InvalidInput,
    LLMAdapter,
    Message,
    OpenAIAdapter,
    OpenAICompatibleAdapter,
    ProviderError,
    StreamEnd,
    TextDelta,
    build_adapter,
)
from adapters.conversation import ToolCall, ToolCallDelta
from adapters.openai_compat import CompatibleEndpoint
from adapters.openai_http import OpenAICompatibleHTTPAdapter, OpenAIHTTPAdapter
from adapters.openai_wire import SSEDecoder
from engine.policy.api import analyze_text
from tests.fakes import FAULT_KINDS, FakeVendorServer, Fault
from tests.fakes.clients import TEST_KEYS, adapter_for, channel_of

CONVERSATION = [Message("system", "Be brief."), Message("user", "Grüße 🚀 “quoted” \\n"),
                Message("assistant", "Hello!"), Message("user", "Count to three, then stop")]

# (kind, options) whose SDK and http adapters must put the same bytes on the wire
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("openai", {}),
    "openai-no-temperature": ("openai", {"send_temperature": False}),
    "openai-org-headers": ("openai", {"organization": "org-fake", "headers": {"X-Trace": "t-1"}}),
    "compat-generic": ("openai_compatible", {}),
    "compat-mistral": ("openai_compatible", {"endpoint": "mistral"}),
    "compat-vllm": ("openai_compatible", {"endpoint": "vllm", "headers": {"X-Trace": "t-2"}}),
}


@pytest.fixture
async def pair(fake: FakeVendorServer) -> AsyncIterator[Callable[..., tuple[LLMAdapter, LLMAdapter]]]:
    """`pair(kind, **options)`: the SDK adapter and the http adapter, alike in everything else."""
    made: list[LLMAdapter] = []

    def _pair(kind: str, **options: Any) -> tuple[LLMAdapter, LLMAdapter]:
        sdk = adapter_for(kind, fake, **options)
        http = adapter_for(kind, fake, transport="http", **options)
        made.extend((sdk, http))
        return sdk, http

    yield _pair
    for adapter in made:
        await adapter.aclose()


async def _drive(adapter: LLMAdapter, stream: bool, **kw: Any) -> tuple[Any, ...]:
    """What a call ended in: the completion's fields, or the error's class, status, retry_after and message."""
    args: dict[str, Any] = {"messages": CONVERSATION, "max_tokens": 64, "temperature": 0.5, **kw}
    try:
        if stream:
            deltas: list[str] = []
            async for ev in adapter.stream(**args):
                if isinstance(ev, TextDelta):
                    deltas.append(ev.text)
                elif isinstance(ev, StreamEnd):
                    c = ev.completion
                    assert "".join(deltas) == c.text
        else:
            c = await adapter.generate(**args)
    except ProviderError as err:
        return type(err).__name__, err.status, err.retry_after, err.message
    return ("ok", c.text, c.finish_reason, c.input_tokens, c.output_tokens, c.cost_usd, c.provider, c.model,
            c.tool_calls)


# ------------------------------------------------------------------ the wire: bodies


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
async def test_same_request_bytes_as_the_sdk(
    config: tuple[str, dict[str, Any]], pair: Callable[..., tuple[LLMAdapter, LLMAdapter]], fake: FakeVendorServer
) -> None:
    kind, options = config
    sdk, http = pair(kind, **options)
    for adapter in (sdk, http):
        assert (await _drive(adapter, False, stop=["three"]))[0] == "ok"
        assert (await _drive(adapter, True, stop=["three"]))[0] == "ok"
    reqs = fake.requests(channel_of(kind))
    assert len(reqs) == 4
    for via_sdk, via_http in ((reqs[0], reqs[2]), (reqs[1], reqs[3])):
        assert via_http.body == via_sdk.body
        assert list(via_http.body) == list(via_sdk.body), "same key order"
        assert via_http.headers["content-length"] == via_sdk.headers["content-length"], "same bytes"
        assert via_http.path == via_sdk.path
        for name in ("authorization", "content-type", "accept", "openai-organization", "x-trace"):
            assert via_http.headers.get(name) == via_sdk.headers.get(name), name


async def test_request_bodies(fake: FakeVendorServer, snapshot: SnapshotAssertion) -> None:
    adapter = adapter_for("openai", fake, transport="http")
    try:
        await adapter.generate("What is 2+2?", 256, 0.2)
        async for _ in adapter.stream("stream this", 32, 1.0, stop=["\n\n"]):
            pass
    finally:
        await adapter.aclose()
    assert [r.body for r in fake.requests("openai")] == snapshot


async def test_a_custom_row_applies_to_the_http_transport(fake: FakeVendorServer) -> None:
    row = CompatibleEndpoint("strict", max_tokens_field="max_completion_tokens", stream_usage_option=False,
                             max_temperature=1.0)
    sdk = OpenAICompatibleAdapter("strict", "m", base_url=fake.channel_url("strict"), endpoint=row)
    http = OpenAICompatibleHTTPAdapter("strict", "m", base_url=fake.channel_url("strict"), endpoint=row)
    try:
        for adapter in (sdk, http):
            with pytest.raises(InvalidInput, match="between 0 and 1"):
                await adapter.generate("hi", 12, 1.2)
            await adapter.generate("hi", 12, 1.0)
            async for _ in adapter.stream("hi", 12, 1.0):
                pass
    finally:
        await sdk.aclose()
        await http.aclose()
    bodies = [r.body for r in fake.requests("strict")]
    assert bodies[:2] == bodies[2:]
    assert bodies[2]["max_completion_tokens"] == 12 and "stream_options" not in bodies[3]
    assert [r.headers["authorization"] for r in fake.requests("strict")] == ["<redacted>"] * 4  # keyless: no-key


# ------------------------------------------------ the wire: every request kind of the surface

_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather “now” in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}, "strict": True}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}}}},
]
_CALLED = [{"role": "user", "content": "weather?"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"x"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": "sunny ☀"}]
_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
           "required": ["name", "n"], "additionalProperties": False}

# name -> generate/stream keywords: every kind of request the surface can make
SURFACE: dict[str, dict[str, Any]] = {
    "tools-auto": {"messages": [Message("user", "weather in Paris?")], "tools": _TOOLS},
    "tools-parallel": {"messages": [Message("user", "both in parallel")], "tools": _TOOLS,
                       "parallel_tool_calls": True},
    "tools-no-parallel": {"messages": [Message("user", "both in parallel")], "tools": _TOOLS,
                          "parallel_tool_calls": False},
    "tools-required": {"messages": [Message("user", "go")], "tools": _TOOLS, "tool_choice": "required"},
    "tools-named": {"messages": [Message("user", "go")], "tools": _TOOLS,
                    "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    "tools-none": {"messages": [Message("user", "go")], "tools": _TOOLS, "tool_choice": "none"},
    "tool-result": {"messages": _CALLED, "tools": _TOOLS},
    "json-object": {"messages": [Message("user", "as JSON")], "response_format": {"type": "json_object"}},
    "json-schema": {"messages": [Message("user", "as JSON")], "response_format": {
        "type": "json_schema", "json_schema": {"name": "thing", "description": "A thing", "schema": _SCHEMA,
                                               "strict": True}}},
    "image-data": {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_PNG}", "detail": "high"}}]}]},
    "image-url": {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://images.example.com/a.png"}},
        {"type": "text", "text": "and this?"}]}]},
    "sampling": {"messages": [Message("user", "sample")], "top_p": 0.9, "seed": 42, "presence_penalty": 0.5,
                 "frequency_penalty": -0.25, "user": "user-1"},
    "everything": {"messages": [Message("system", "Be brief."), *_CALLED[:2],
                                {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
                                {"role": "user", "content": [{"type": "text", "text": "now the time, parallel"},
                                                             {"type": "image_url", "image_url": {
                                                                 "url": f"data:image/png;base64,{_PNG}"}}]}],
                   "tools": _TOOLS, "tool_choice": "auto", "parallel_tool_calls": True, "top_p": 0.5, "seed": 7,
                   "stop": ["\n\n"], "response_format": {"type": "json_object"}},
}


async def _drive_surface(adapter: LLMAdapter, stream: bool, kw: dict[str, Any]) -> tuple[Any, ...]:
    """The whole outcome of a surface call: text, finish, tool calls (streamed: deltas too), usage; or the error."""
    args: dict[str, Any] = {"max_tokens": 200, "temperature": 0.5, **kw}
    try:
        if stream:
            events = [ev async for ev in adapter.stream(**args)]
            c = events[-1].completion  # type: ignore[union-attr]
            deltas = tuple((ev.index, ev.id, ev.name, ev.arguments) for ev in events
                           if not isinstance(ev, TextDelta) and hasattr(ev, "index"))
        else:
            c = await adapter.generate(**args)
            deltas = ()
    except ProviderError as err:
        return type(err).__name__, err.status, err.message
    return "ok", c.text, c.finish_reason, c.tool_calls, c.input_tokens, c.output_tokens, deltas


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
@pytest.mark.parametrize("case", SURFACE.values(), ids=SURFACE.keys())
async def test_every_request_kind_same_bytes_and_results_as_the_sdk(
    kind: str, case: dict[str, Any], pair: Callable[..., tuple[LLMAdapter, LLMAdapter]], fake: FakeVendorServer
) -> None:
    sdk, http = pair(kind, pass_through=["top_k"])
    if kind == "openai_compatible":
        case = {k: v for k, v in case.items() if k != "user"} | {"extra_body": {"top_k": 3}}
    outcomes = [await _drive_surface(adapter, stream, case) for adapter in (sdk, http) for stream in (False, True)]
    assert outcomes[0][0] == "ok", outcomes[0]
    assert outcomes[2:] == outcomes[:2], "sdk == http, json and sse"
    assert outcomes[1][1:6] == outcomes[0][1:6], "the stream assembles what generate returns"
    reqs = fake.requests(channel_of(kind))
    assert len(reqs) == 4
    for via_sdk, via_http in ((reqs[0], reqs[2]), (reqs[1], reqs[3])):
        assert via_http.body == via_sdk.body
        assert list(via_http.body) == list(via_sdk.body), "same key order"
        assert via_http.headers["content-length"] == via_sdk.headers["content-length"], "same bytes"


def test_the_body_order_is_the_installed_sdks() -> None:
    import inspect
    import re

    from openai.resources.chat.completions import AsyncCompletions

    from adapters.openai_wire import SDK_BODY_ORDER

    source = inspect.getsource(AsyncCompletions.create)
    literal = source[source.index("body=await async_maybe_transform("):]
    keys = re.findall(r'^\s*"(\w+)": \w+,$', literal[: literal.index("},")], re.M)
    assert "messages" in keys and keys == [k for k in SDK_BODY_ORDER if k in keys], "SDK_BODY_ORDER is stale"
    missing = set(keys) - set(SDK_BODY_ORDER)
    assert not missing, f"fields of this SDK missing from SDK_BODY_ORDER: {missing}"


@pytest.mark.parametrize("endpoint", ["mistral", "ollama", "vllm"])
async def test_endpoint_rows_map_the_surface_alike(
    endpoint: str, pair: Callable[..., tuple[LLMAdapter, LLMAdapter]], fake: FakeVendorServer
) -> None:
    sdk, http = pair("openai_compatible", endpoint=endpoint)
    case = {**SURFACE["everything"], "seed": 11, "presence_penalty": 0.25}
    if endpoint == "ollama":
        case.pop("parallel_tool_calls")
    outcomes = [await _drive_surface(adapter, stream, case) for adapter in (sdk, http) for stream in (False, True)]
    assert outcomes[0][0] == "ok" and outcomes[2:] == outcomes[:2]
    reqs = fake.requests("compat")
    for via_sdk, via_http in ((reqs[0], reqs[2]), (reqs[1], reqs[3])):
        assert list(via_http.body.items()) == list(via_sdk.body.items())
        assert via_http.headers["content-length"] == via_sdk.headers["content-length"]
    seed_field = "random_seed" if endpoint == "mistral" else "seed"
    assert reqs[0].body[seed_field] == 11
    assert list(reqs[0].body)[-1] == (seed_field if endpoint == "mistral" else "top_p"), "a row's own field goes last"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fault", ["rate_limit", "server_error", "bad_request", "stream_error", "drop"])
async def test_surface_requests_fail_as_with_the_sdk(
    fault: str, stream: bool, pair: Callable[..., tuple[LLMAdapter, LLMAdapter]], fake: FakeVendorServer
) -> None:
    sdk, http = pair("openai")
    outcomes = []
    for adapter in (sdk, http):
        fake.script("openai", Fault(fault, after_chunks=3))  # type: ignore[arg-type]
        outcomes.append(await _drive_surface(adapter, stream, SURFACE["tools-parallel"]))
    assert outcomes[0][0] != "ok" or fault == "stream_error" and not stream
    assert outcomes[1][:2] == outcomes[0][:2], "class and status"
    if outcomes[0][1] is not None:
        assert outcomes[1] == outcomes[0]


async def test_refusals_before_the_call_are_the_same(pair: Callable[..., tuple[LLMAdapter, LLMAdapter]],
                                                     fake: FakeVendorServer) -> None:
    sdk, http = pair("openai")
    for kw in ({"extra_body": {"top_k": 1}}, {"metadata": {"team": "a"}}):
        texts = []
        for adapter in (sdk, http):
            with pytest.raises(BadRequest) as info:
                await adapter.generate("hi", 10, 0.5, **kw)
            texts.append(str(info.value))
        assert texts[0] == texts[1]
    assert fake.calls() == 0


# ------------------------------------------------------------ the wire: answers


PROMPTS = ["Grüße, 世界! 🚀 naïve — “quotes”", "line one\nline two\t{\"k\": [1, 2]}\r\n", "  padded  ",
           "C:\\path \\u0041 \u2028 separator"]


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
@pytest.mark.parametrize("prompt", PROMPTS, ids=["unicode", "json-ish", "padded", "u2028"])
async def test_same_completions_as_the_sdk(
    kind: str, prompt: str, pair: Callable[..., tuple[LLMAdapter, LLMAdapter]]
) -> None:
    sdk, http = pair(kind)
    outcomes = []
    for adapter in (sdk, http):
        for stream in (False, True):
            outcomes.append(await _drive(adapter, stream, messages=[Message("user", prompt)], max_tokens=200))
    assert outcomes[0][0] == "ok" and outcomes[0][1].endswith(prompt)
    assert outcomes == [outcomes[0]] * 4, "json == sse, sdk == http"


PARITY_FAULTS = [f for f in FAULT_KINDS if f != "timeout"]  # timeouts: test_contract (same class, per call)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fault", PARITY_FAULTS)
@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
async def test_every_fault_ends_as_with_the_sdk(
    kind: str, fault: str, stream: bool, pair: Callable[..., tuple[LLMAdapter, LLMAdapter]], fake: FakeVendorServer
) -> None:
    sdk, http = pair(kind)
    outcomes = []
    for adapter in (sdk, http):
        fake.script(channel_of(kind), Fault(fault, retry_after=2.5, after_chunks=3))  # type: ignore[arg-type]
        outcomes.append(await _drive(adapter, stream))
    via_sdk, via_http = outcomes
    assert via_http[:3] == via_sdk[:3], "class, status and retry_after"
    if via_sdk[1] is not None or fault == "stream_error":  # the vendor's message; transport messages differ
        assert via_http == via_sdk
    assert fake.calls(channel_of(kind)) == 2


async def test_connections_are_reused_after_streams_and_errors(odd: OddServer) -> None:
    ok: Spec = (200, {}, [_OK + b"}"], False)
    odd.answers = [ok, MOCKS["sse"], ok, MOCKS["sse"], ok, MOCKS["sse"], ok, MOCKS["429-retry-after-ms"],
                   MOCKS["sse-503"], ok]
    adapter = build_adapter("openai", provider="p", model="m", api_key=MOCK_KEY, base_url=odd.url,
                            options={"transport": "http"})
    assert isinstance(adapter, OpenAIHTTPAdapter)
    try:
        await adapter.generate("open the connection", 50, 0.5)
        for _ in range(3):
            async for _ in adapter.stream("keep the connection", 50, 0.5):
                pass
            await adapter.generate("and again", 50, 0.5)
        assert (await _drive(adapter, False))[:2] == ("RateLimited", 429)
        assert (await _drive(adapter, True))[:2] == ("Overloaded", 503)
        await adapter.generate("still the first connection", 50, 0.5)
    finally:
        await adapter.aclose()
    assert len(odd.peers) == 10 and len(set(odd.peers)) == 1, odd.peers
    assert adapter._http is None and adapter._lean is None, "aclose() closed the clients"


async def test_the_key_never_appears_in_errors(fake: FakeVendorServer) -> None:
    key = TEST_KEYS["openai"]
    adapter = adapter_for("openai", fake, transport="http")
    try:
        for stream in (False, True):
            fake.script("openai", "auth")
            with pytest.raises(AuthError) as info:
                await _raise(adapter, stream)
            err = info.value
            texts = [str(err), repr(err), err.message, *map(str, err.args), repr(adapter), repr(err.__cause__),
                     "".join(traceback.format_exception(err))]
            assert isinstance(err.__cause__, aiohttp.ClientResponseError)
            for text in texts:
                assert key not in text
    finally:
        await adapter.aclose()


async def _raise(adapter: LLMAdapter, stream: bool) -> None:
    if stream:
        async for _ in adapter.stream("hello", 10, 0.5):
            pass
    else:
        await adapter.generate("hello", 10, 0.5)


# ---------------------------------------- a local server: answers the fake does not give

MOCK_KEY = "sk-mock-0123456789abcdefghij"
_OK = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}]'


def _chunk(delta: str, finish: str | None = None, usage: str = "") -> bytes:
    fin = "null" if finish is None else f'"{finish}"'
    return (b'data: {"choices":[{"index":0,"delta":{"content":"' + delta.encode() + b'"},"finish_reason":'
            + fin.encode() + b"}]" + usage.encode() + b"}\n\n")


_USAGE = ',"usage":{"prompt_tokens":7,"completion_tokens":3}'
_SSE = _chunk("Hel") + _chunk("lo\u2028wörld", "stop") + b"data: [DONE]\n\n"

# name -> (status, headers, body pieces, streaming); each piece is sent as it is, splits included
MOCKS: dict[str, tuple[int, dict[str, str], list[bytes], bool]] = {
    "ok-no-usage": (200, {}, [_OK + b"}"], False),
    "ok-usage": (200, {}, [_OK + _USAGE.encode() + b"}"], False),
    "no-choices": (200, {}, [b'{"choices":[]}'], False),
    "filtered-200": (200, {}, [_OK.replace(b'"stop"', b'"content_filter"') + b"}"], False),
    "refusal": (200, {}, [b'{"choices":[{"index":0,"message":{"content":null,"refusal":"I cannot"},'
                          b'"finish_reason":"stop"}]}'], False),
    "malformed": (200, {}, [b'{"choices": ['], False),
    "429-retry-after-ms": (429, {"retry-after-ms": "1500"}, [b'{"error":{"message":"slow down"}}'], False),
    "400-context-by-message": (400, {}, [b'{"error":{"message":"This model\'s maximum context length is 8k"}}'],
                               False),
    "400-filter-code": (400, {}, [b'{"error":{"message":"no","code":"content_filter"}}'], False),
    "400-unwrapped-context": (400, {}, [b'{"message":"too long","code":"context_length_exceeded"}'], False),
    "400-text-body": (400, {}, [b"bad request, plain text"], False),
    "400-message-not-a-string": (400, {}, [b'{"error":{"message":{"detail":"x"}}}'], False),
    "401-echoing-the-key": (401, {}, [b'{"error":{"message":"Incorrect API key: ' + MOCK_KEY.encode() + b'"}}'],
                            False),
    "404": (404, {}, [b'{"error":{"message":"no such model","code":"model_not_found"}}'], False),
    "409": (409, {}, [b'{"error":{"message":"conflict"}}'], False),
    "502-html": (502, {}, [b"<html>bad gateway</html>"], False),
    "504-empty": (504, {}, [b""], False),
    "sse": (200, {"content-type": "text/event-stream"}, [_SSE], True),
    "sse-crlf-split-everywhere": (200, {}, [bytes([b]) for b in _SSE.replace(b"\n", b"\r\n")], True),
    "sse-cr-only": (200, {}, [_SSE.replace(b"\n", b"\r")], True),
    "sse-comments-ids-and-multiline-data": (200, {}, [
        b": keep-alive\n\nid: 1\nretry: 10\n" + _chunk("a")[:-2] + b"\n\n",
        b'data: {"choices":[{"index":0,"delta":{"content":"b"},\ndata: "finish_reason":"length"}]' + _USAGE.encode()
        + b"}\n\ndata: [DONE]\n\n"], True),
    "sse-usage-chunk-no-done": (200, {}, [_chunk("x", "stop"), b'data: {"choices":[]' + _USAGE.encode() + b"}\n\n"],
                                True),
    "sse-other-choices-ignored": (200, {}, [_chunk("mine").replace(b'"index":0', b'"index":1'), _chunk("x", "stop"),
                                            b"data: [DONE]\n\n"], True),
    "sse-no-finish": (200, {}, [_chunk("x"), b"data: [DONE]\n\n"], True),
    "sse-content-filter": (200, {}, [_chunk("x", "content_filter"), b"data: [DONE]\n\n"], True),
    "sse-content-filter-at-once": (200, {}, [_chunk("", "content_filter"), b"data: [DONE]\n\n"], True),
    "filtered-200-empty": (200, {}, [_OK.replace(b'"hi there"', b'""').replace(b'"stop"', b'"content_filter"') + b"}"],
                           False),
    "sse-error-event-context": (200, {}, [_chunk("x"), b'data: {"error":{"message":"too long",'
                                          b'"code":"context_length_exceeded"}}\n\n'], True),
    "sse-error-event-no-message": (200, {}, [b'data: {"error":{"type":"server_error"}}\n\n'], True),
    "sse-malformed": (200, {}, [b"data: {not json\n\n"], True),
    "sse-429": (429, {"retry-after": "3"}, [b'{"error":{"message":"later"}}'], True),
    "tool-calls": (200, {}, [b'{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":['
                             b'{"id":"call_a","type":"function","function":{"name":"f","arguments":"{\\"a\\": 1 }"}},'
                             b'{"id":"call_b","type":"function","function":{"name":"g","arguments":""}}]},'
                             b'"finish_reason":"tool_calls"}]' + _USAGE.encode() + b"}"], False),
    "sse-tool-calls-interleaved-odd-indexes": (200, {}, [
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Let me check. "},'
        b'"finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":"call_x","type":"function",'
        b'"function":{"name":"f","arguments":"{\\"a\\""}}]},"finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":7,"id":"call_y","type":"function",'
        b'"function":{"name":"g","arguments":""}}]},"finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"function":{"arguments":": 1}"}}]},'
        b'"finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":7,"function":{"arguments":"{}"}}]},'
        b'"finish_reason":"tool_calls"}]' + _USAGE.encode() + b'}\n\ndata: [DONE]\n\n'], True),
    "sse-503": (503, {}, [b'{"error":{"message":"overloaded"}}'], True),
}


Spec = tuple[int, dict[str, str], list[bytes], bool]


class OddServer:
    """aiohttp on 127.0.0.1 answering each request with the next of `answers` (the last one repeats).

    The body pieces are written one by one, as they are given (chunked: no content-length).
    """

    def __init__(self) -> None:
        self.answers: list[Spec] = []
        self.paths: list[str] = []
        self.peers: list[Any] = []
        self.hosts: list[str] = []
        """Each request's client address: one per connection the client opened."""
        self.url = ""
        self.eof_delay_s = 0.0  # a pause before the body's end (after an SSE stream's [DONE])

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        self.paths.append(request.path)
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        self.hosts.append(request.host)
        status, extra, body, stream = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        content_type = "text/event-stream" if stream and status == 200 else "application/json"
        resp = web.StreamResponse(status=status, headers={"content-type": content_type, **extra})
        await resp.prepare(request)
        for piece in body:
            if piece:
                await resp.write(piece)
        if self.eof_delay_s:
            await asyncio.sleep(self.eof_delay_s)
        await resp.write_eof()
        return resp


@pytest.fixture
async def odd() -> AsyncIterator[OddServer]:
    server = OddServer()
    runner = web.ServerRunner(web.Server(server.handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/v1"
    yield server
    await runner.cleanup()


def _both(kind: str, odd: OddServer, *answers: Spec) -> tuple[LLMAdapter, LLMAdapter]:
    odd.answers = list(answers)
    common: dict[str, Any] = {"provider": "p", "model": "m", "api_key": MOCK_KEY, "base_url": odd.url}
    sdk = build_adapter(kind, **common, options={})
    http = build_adapter(kind, **common, options={"transport": "http"})
    assert isinstance(sdk, OpenAIAdapter) and isinstance(http, (OpenAIHTTPAdapter, OpenAICompatibleHTTPAdapter))
    return sdk, http


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
@pytest.mark.parametrize("spec", MOCKS.values(), ids=MOCKS.keys())
async def test_odd_answers_end_as_with_the_sdk(kind: str, spec: Spec, odd: OddServer) -> None:
    sdk, http = _both(kind, odd, spec)
    stream = spec[3]
    try:
        via_sdk, via_http = await _drive(sdk, stream), await _drive(http, stream)
    finally:
        await sdk.aclose()
        await http.aclose()
    assert via_http == via_sdk
    assert all(MOCK_KEY not in str(part) for part in via_http)
    assert len(odd.paths) == 2


async def test_odd_tool_call_answers_parse_alike(odd: OddServer) -> None:
    results = []
    for name in ("tool-calls", "sse-tool-calls-interleaved-odd-indexes"):
        spec = MOCKS[name]
        sdk, http = _both("openai", odd, spec)
        try:
            for adapter in (sdk, http):
                args: dict[str, Any] = {"messages": CONVERSATION, "max_tokens": 64, "temperature": 0.5}
                if spec[3]:
                    events = [ev async for ev in adapter.stream(**args)]
                    c = events[-1].completion  # type: ignore[union-attr]
                    results.append((c.text, c.finish_reason, c.tool_calls,
                                    [(e.index, e.id, e.arguments) for e in events if isinstance(e, ToolCallDelta)]))
                else:
                    c = await adapter.generate(**args)
                    results.append((c.text, c.finish_reason, c.tool_calls, []))
        finally:
            await sdk.aclose()
            await http.aclose()
    assert results[0] == results[1] and results[2] == results[3]
    assert results[0][2] == (ToolCall("call_a", "f", '{"a": 1 }'), ToolCall("call_b", "g", ""))  # as sent
    text, finish, calls, deltas = results[2]
    assert (text, finish) == ("Let me check. ", "tool_calls")
    assert calls == (ToolCall("call_x", "f", '{"a": 1}'), ToolCall("call_y", "g", "{}"))
    assert [d[0] for d in deltas] == [0, 1, 0, 1], "renumbered in order of first appearance"


async def test_a_non_utf8_body_is_a_server_error(odd: OddServer) -> None:
    _, http = _both("openai", odd, (200, {}, [b'{"choices": "\xff\xfe"}'], False))
    try:
        result = await _drive(http, False)
    finally:
        await http.aclose()
    assert result[:2] == ("ServerError", None)


async def test_an_event_without_data_is_skipped(odd: OddServer) -> None:
    # the SDK would fail to parse such an event's empty data; the spec says not to dispatch it
    _, http = _both("openai", odd, (200, {}, [b"event: ping\n\n" + _SSE], True))
    try:
        result = await _drive(http, True)
    finally:
        await http.aclose()
    assert result[:3] == ("ok", "Hello\u2028wörld", "stop")


@pytest.mark.parametrize("transport", ["sdk", "http"])
async def test_a_late_body_end_after_done_is_read_so_the_connection_is_reused(
    transport: str, odd: OddServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapters.openai.DRAIN_S", 10.0)  # the wait is not what is tested
    monkeypatch.setattr("adapters.openai_http.DRAIN_S", 10.0)
    odd.eof_delay_s = 0.02  # the chunked body's end comes after [DONE] has been read
    pair = _both("openai", odd, *[(200, {}, [_SSE], True)] * 3)
    adapter = pair[0] if transport == "sdk" else pair[1]
    try:
        for _ in range(3):
            assert (await _drive(adapter, True))[:2] == ("ok", "Hello\u2028wörld")
    finally:
        await pair[0].aclose()
        await pair[1].aclose()
    assert len(set(odd.peers)) == 1, odd.peers


async def test_redirects_are_followed_and_a_loop_keeps_the_key_out_of_the_cause(odd: OddServer) -> None:
    moved: Spec = (307, {"location": "/v2/chat/completions"}, [b""], False)
    # the lean client hands a redirected URL to aiohttp for good: the first request is sent twice
    _, http = _both("openai", odd, moved, moved, (200, {}, [_OK + b"}"], False), moved)
    try:
        assert (await _drive(http, False))[:2] == ("ok", "hi there")
        assert odd.paths == ["/v1/chat/completions", "/v1/chat/completions", "/v2/chat/completions"]
        assert http._lean is None  # type: ignore[attr-defined]
        with pytest.raises(ProviderError) as info:
            await _raise(http, False)  # the server now answers 307 forever
    finally:
        await http.aclose()
    err = info.value
    assert (type(err).__name__, err.status) == ("ServerError", None)
    assert isinstance(err.__cause__, aiohttp.TooManyRedirects)
    for text in (repr(err.__cause__), "".join(traceback.format_exception(err)), err.message):
        assert MOCK_KEY not in text


def test_the_lean_client_runs_on_uvloop(fake: FakeVendorServer) -> None:
    # engine serve runs on uvloop, whose transports are its own classes
    import uvloop

    async def calls() -> tuple[Any, ...]:
        adapter = adapter_for("openai", fake, transport="http")
        try:
            return (await _drive(adapter, False))[:3] + (await _drive(adapter, True))[:3]
        finally:
            await adapter.aclose()

    loop = uvloop.new_event_loop()
    try:
        outcome = loop.run_until_complete(calls())
    finally:
        loop.close()
    assert outcome[0] == outcome[3] == "ok" and outcome[1] == outcome[4]
    assert fake.calls("openai") == 2


async def test_a_stream_that_ends_after_aclose_does_not_keep_its_connection(fake: FakeVendorServer) -> None:
    adapter = adapter_for("openai", fake, transport="http")
    events = adapter.stream("a long answer, please", 200, 0.5)
    await events.__anext__()
    origin = adapter._lean  # type: ignore[attr-defined]
    assert origin is not None
    await adapter.aclose()
    async for _ in events:
        pass
    assert origin.describe() == {"open": 0, "idle": 0}


async def test_a_redirected_stream_goes_through_aiohttp(odd: OddServer) -> None:
    moved: Spec = (308, {"location": "/v2/chat/completions"}, [b'{"moved": true}'], False)
    _, http = _both("openai", odd, moved, moved, MOCKS["sse"])
    try:
        assert (await _drive(http, True))[:3] == ("ok", "Hello\u2028wörld", "stop")
    finally:
        await http.aclose()
    assert odd.paths == ["/v1/chat/completions", "/v1/chat/completions", "/v2/chat/completions"]


async def test_a_proxy_is_used_through_aiohttp(odd: OddServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # the local server stands in for the proxy: the request reaches it for the vendor's host
    monkeypatch.setenv("HTTP_PROXY", odd.url.removesuffix("/v1"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    odd.answers = [(200, {}, [_OK + b"}"], False)]
    http = build_adapter("openai", provider="p", model="m", api_key=MOCK_KEY,
                         base_url="http://vendor.example:8080/v1", options={"transport": "http"})
    try:
        assert (await _drive(http, False))[:2] == ("ok", "hi there")
        assert http._lean is None  # type: ignore[attr-defined]
    finally:
        await http.aclose()
    assert [h.split(":")[0] for h in odd.hosts] == ["vendor.example"]


async def test_a_body_until_close_and_a_cut_body(odd: OddServer) -> None:
    """Answers framed by the connection's end (no length, not chunked) and bodies cut short, on the lean client."""
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = _OK + b"}"
        cut = writer.get_extra_info("sockname")[1] == cut_port
        length = b"content-length: 999\r\n" if cut else b""  # more than is sent: the body is cut short
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + length + b"\r\n" + body)
        await writer.drain()
        writer.close()

    plain = await asyncio.start_server(until_close, "127.0.0.1", 0)
    cutting = await asyncio.start_server(until_close, "127.0.0.1", 0)
    cut_port = cutting.sockets[0].getsockname()[1]
    outcomes = []
    try:
        for server in (plain, cutting):
            url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
            for kind in ("sdk", "http"):
                adapter = build_adapter("openai", provider="p", model="m", api_key=MOCK_KEY, base_url=url,
                                        options={"transport": kind})
                try:
                    outcomes.append((await _drive(adapter, False))[:3])
                finally:
                    await adapter.aclose()
    finally:
        plain.close()
        cutting.close()
    assert outcomes[0] == outcomes[1] == ("ok", "hi there", "stop")
    assert outcomes[2] == outcomes[3] == ("ServerError", None, None)


@pytest.mark.parametrize(("name", "outcome"), [
    ("filtered-200", ("ok", "hi there", "content_filter")), ("sse-content-filter", ("ok", "x", "content_filter")),
    ("filtered-200-empty", ("ContentFiltered", None)), ("sse-content-filter-at-once", ("ContentFiltered", None)),
])
async def test_content_filter_keeps_partial_output_and_refuses_when_there_is_none(
    name: str, outcome: tuple[Any, ...], odd: OddServer
) -> None:
    spec = MOCKS[name]
    sdk, http = _both("openai", odd, spec)
    try:
        results = [await _drive(adapter, spec[3]) for adapter in (sdk, http)]
    finally:
        await sdk.aclose()
        await http.aclose()
    assert results[0] == results[1]
    assert results[0][: len(outcome)] == outcome


def test_sse_decoder_framing() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\n\r\ndata:b\ndata:  c\n") == ["a"]
    assert d.feed(b"\n: comment\n\nevent: x\n\ndata: \xe2\x80") == ["b\n c"]
    assert d.feed(b"\xa8\n\n") == ["\u2028"]


# ----------------------------------------------------------------------- registry and schema


def test_the_transport_option_picks_the_class() -> None:
    common: dict[str, Any] = {"provider": "p", "model": "m", "api_key": "k", "base_url": "http://127.0.0.1:9/v1"}
    assert type(build_adapter("openai", **common, options={"transport": "http"})) is OpenAIHTTPAdapter
    assert type(build_adapter("openai", **common, options={"transport": "sdk"})) is OpenAIAdapter
    http = build_adapter("openai_compatible", **common, options={"transport": "http", "endpoint": "mistral"})
    assert type(http) is OpenAICompatibleHTTPAdapter and http.kind == "openai_compatible"
    assert http._max_temperature == 1.5  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="transport must be one of: sdk, http"):
        build_adapter("openai", **common, options={"transport": "grpc"})
    with pytest.raises(InvalidInput, match="unknown option.*transport"):
        build_adapter("anthropic", **common, options={"transport": "http"})


_POLICY = """version: 1
providers:
  up: {{adapter: {adapter}, api_key: sk-x, base_url: 'http://127.0.0.1:9/v1', options: {{transport: {transport}}}}}
models:
  m: {{provider: up, id: m, price: {{input: 1, output: 1}}, context_window: 1000, scores: {{chat: 1}}}}
routes:
  - name: default
    strategy: cheapest
"""


@pytest.mark.parametrize("adapter", ["openai", "openai_compatible", "anthropic"])
@pytest.mark.parametrize("transport", ["http", "sdk", "grpc"])
def test_the_schema_accepts_the_transport_option(adapter: str, transport: str) -> None:
    analysis = analyze_text(_POLICY.format(adapter=adapter, transport=transport))
    errors = [d.code for d in analysis.errors]
    if adapter != "anthropic" and transport != "grpc":
        assert errors == []
    else:
        assert errors and all(code.startswith("schema") for code in errors), errors


# -------------------------------- the SDK transport's stream decoding is the SDK's own


def _decoded(adapter: LLMAdapter, pieces: list[bytes]) -> list[Any]:
    """A streamed body's chunks as both transports decode them (`SSEDecoder`, then `_chunk`)."""
    decoder, out = SSEDecoder(), []
    try:
        for piece in pieces:
            for data in decoder.feed(piece):
                if data.startswith("[DONE]"):
                    return out
                out.append(dict(adapter._chunk(data)))  # type: ignore[attr-defined]
    except ProviderError as err:
        out.append(("error event", err.message))
    except ValueError as err:
        out.append(("malformed", type(err).__name__))
    return out


@pytest.mark.parametrize("name", [k for k, v in MOCKS.items() if v[3] and v[0] == 200])
async def test_streamed_chunks_decode_as_the_sdks_own_iterator(name: str, odd: OddServer) -> None:
    # The SDK transport hands the body to our decoder rather than to the SDK's chunk models (which
    # cost ~0.1 ms each): what it reads must be what `AsyncStream` yields, `to_dict()`ed.
    import openai

    sdk, _ = _both("openai", odd, MOCKS[name])
    client = openai.AsyncOpenAI(api_key=MOCK_KEY, base_url=odd.url, max_retries=0)
    via_sdk: list[Any] = []
    try:
        stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        async for chunk in stream:
            via_sdk.append(chunk.to_dict())
    except openai.APIError as err:
        via_sdk.append(("error event", err.message))
    except ValueError as err:
        via_sdk.append(("malformed", type(err).__name__))
    finally:
        await client.close()
        await sdk.aclose()
    assert via_sdk, name
    assert _decoded(sdk, MOCKS[name][2]) == via_sdk
