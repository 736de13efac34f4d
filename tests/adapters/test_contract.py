"""One contract, every vendor adapter: the official SDKs over loopback HTTP against the fakes.

The OpenAI-shaped kinds run a second time over their lean transport (`transport: http`, plain
aiohttp instead of the SDK): every assertion holds for both, the SDK path being the reference.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters import (
    AuthError,
    BadRequest,
    Completion,
    ContentFiltered,
    ContextTooLong,
    InvalidInput,
    LLMAdapter,
    Message,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    StreamEnd,
    TextDelta,
    Timeout,
)
from tests.fakes import FakeVendorServer, Fault, tokens
from tests.fakes.clients import TEST_KEYS, TEST_MODELS, VENDOR_KINDS, adapter_for, channel_of

HTTP_TRANSPORT_KINDS = ("openai", "openai_compatible")
"""Kinds with a `transport: http` option."""
CASES = [(k, "sdk") for k in VENDOR_KINDS] + [(k, "http") for k in HTTP_TRANSPORT_KINDS]
pytestmark = pytest.mark.parametrize(
    ("kind", "transport"), CASES, ids=[k if t == "sdk" else f"{k}-{t}" for k, t in CASES]
)

Make = Callable[..., LLMAdapter]


def _transport_options(transport: str) -> dict[str, Any]:
    return {} if transport == "sdk" else {"transport": transport}


@pytest.fixture
async def make(fake: FakeVendorServer, transport: str) -> AsyncIterator[Make]:
    """Build adapters against the fake; all are closed at teardown, in the test's event loop."""
    made: list[LLMAdapter] = []

    def _make(kind: str, **kw: object) -> LLMAdapter:
        adapter = adapter_for(kind, fake, **_transport_options(transport), **kw)  # type: ignore[arg-type]
        made.append(adapter)
        return adapter

    yield _make
    for adapter in made:
        await adapter.aclose()


async def collect(events: AsyncIterator[TextDelta | StreamEnd]) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    end: Completion | None = None
    async for ev in events:
        if isinstance(ev, TextDelta):
            assert end is None, "text after StreamEnd"
            deltas.append(ev.text)
        else:
            end = ev.completion
    assert end is not None, "no StreamEnd"
    return deltas, end


async def test_generate_parses_text_usage_and_cost(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    c = await adapter.generate("Say hello", 100, 0.3)
    model = TEST_MODELS[kind]
    assert c.text == f"Echo from {model}: Say hello"
    assert (c.provider, c.model, c.finish_reason) == (f"fake-{kind}", model, "stop")
    assert c.input_tokens == tokens("Say hello")
    assert c.output_tokens == tokens(c.text)
    assert c.cost_usd == pytest.approx((c.input_tokens * 1.0 + c.output_tokens * 2.0) / 1e6)
    assert c.latency_ms > 0
    assert fake.calls(channel_of(kind)) == 1


async def test_stream_assembles_the_generate_text(kind: str, make: Make) -> None:
    adapter = make(kind)
    whole = await adapter.generate("stream me several words please", 100, 0.0)
    deltas, end = await collect(adapter.stream("stream me several words please", 100, 0.0))
    assert len(deltas) > 1
    assert "".join(deltas) == end.text == whole.text
    assert (end.input_tokens, end.output_tokens, end.finish_reason) == (
        whole.input_tokens, whole.output_tokens, whole.finish_reason,
    )
    assert end.cost_usd == pytest.approx(whole.cost_usd)
    assert end.latency_ms > 0


async def test_max_tokens_reached_is_length(kind: str, make: Make) -> None:
    c = await make(kind).generate("a long enough prompt to be cut by two tokens", 2, 0.5)
    assert c.finish_reason == "length"
    assert c.text == f"Echo from {TEST_MODELS[kind]}: a long enough"[:8]


async def test_stop_sequence_ends_the_text(kind: str, make: Make, fake: FakeVendorServer) -> None:
    c = await make(kind).generate("alpha beta gamma", 100, 0.5, stop=["gamma"])
    assert c.text == f"Echo from {TEST_MODELS[kind]}: alpha beta "
    assert c.finish_reason == "stop"


PROMPTS = {
    "unicode-emoji": "Grüße, 世界! 🚀🔥 naïve café — “quotes”",
    "right-to-left": "مرحبا بالعالم שלום עולם",
    "multiline-json": 'line one\nline two\t{"k": [1, 2, "three"]}\r\n',
    "leading-trailing-space": "   padded prompt   ",
    "backslashes": r"C:\path\to\file \n not a newline \u0041",
}


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
async def test_prompts_round_trip_exactly(kind: str, prompt: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    c = await adapter.generate(prompt, 1000, 0.5)
    assert c.text == f"Echo from {TEST_MODELS[kind]}: {prompt}"
    _, end = await collect(adapter.stream(prompt, 1000, 0.5))
    assert end.text == c.text


async def test_system_prompt_and_multi_turn(kind: str, make: Make, fake: FakeVendorServer) -> None:
    conversation = [
        Message("system", "You are terse."),
        Message("user", "first question"),
        Message("assistant", "first answer"),
        Message("user", "second question"),
    ]
    c = await make(kind).generate(messages=conversation, max_tokens=50, temperature=0.0)
    assert c.text == f"Echo from {TEST_MODELS[kind]}: second question"
    assert c.input_tokens == sum(tokens(m.content) for m in conversation)
    body = repr(fake.last_body(channel_of(kind)))
    for m in conversation:
        assert m.content in body


INVALID: dict[str, dict[str, object]] = {
    "empty-prompt": {"prompt": ""},
    "whitespace-prompt": {"prompt": " \n\t "},
    "neither-prompt-nor-messages": {},
    "both-prompt-and-messages": {"prompt": "hi", "messages": [Message("user", "hi")]},
    "empty-messages": {"messages": []},
    "only-system": {"messages": [Message("system", "rules")]},
    "blank-message": {"messages": [Message("user", "hi"), Message("assistant", "  ")]},
    "bad-role": {"messages": [Message("tool", "hi")]},  # type: ignore[arg-type]
    "zero-max-tokens": {"prompt": "hi", "max_tokens": 0},
    "negative-max-tokens": {"prompt": "hi", "max_tokens": -5},
    "bool-max-tokens": {"prompt": "hi", "max_tokens": True},
    "negative-temperature": {"prompt": "hi", "temperature": -0.1},
    "nan-temperature": {"prompt": "hi", "temperature": float("nan")},
    "temperature-above-2": {"prompt": "hi", "temperature": 2.01},
    "empty-stop": {"prompt": "hi", "stop": [""]},
    "zero-timeout": {"prompt": "hi", "timeout_s": 0},
}


@pytest.mark.parametrize("args", INVALID.values(), ids=INVALID.keys())
async def test_invalid_input_is_rejected_before_any_request(
    kind: str, args: dict[str, object], make: Make, fake: FakeVendorServer
) -> None:
    adapter = make(kind)
    with pytest.raises(InvalidInput):
        await adapter.generate(**args)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        adapter.stream(**args)  # type: ignore[arg-type]
    assert fake.calls() == 0


async def test_temperature_range_is_the_vendors(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    top = {"openai": 2.0, "openai_compatible": 2.0, "gemini": 2.0, "anthropic": 1.0}[kind]
    await adapter.generate("hi", 10, top)
    with pytest.raises(InvalidInput, match="temperature"):
        await adapter.generate("hi", 10, top + 0.1)
    assert fake.calls() == 1


# (fault, class, HTTP status the error reports) per vendor; None status: no HTTP error status
FAULTS: dict[str, dict[str, tuple[type[ProviderError], int | None]]] = {
    "openai": {
        "rate_limit": (RateLimited, 429), "server_error": (ServerError, 500), "unavailable": (Overloaded, 503),
        "overloaded": (Overloaded, 503), "drop": (ServerError, None), "malformed": (ServerError, None),
        "context_length": (ContextTooLong, 400), "content_filter": (ContentFiltered, 400), "auth": (AuthError, 401),
        "bad_request": (BadRequest, 400),
    },
    "anthropic": {
        "rate_limit": (RateLimited, 429), "server_error": (ServerError, 500), "unavailable": (Overloaded, 503),
        "overloaded": (Overloaded, 529), "drop": (ServerError, None), "malformed": (ServerError, None),
        "context_length": (ContextTooLong, 400), "content_filter": (ContentFiltered, None), "auth": (AuthError, 401),
        "bad_request": (BadRequest, 400),
    },
    "gemini": {
        "rate_limit": (RateLimited, 429), "server_error": (ServerError, 500), "unavailable": (Overloaded, 503),
        "overloaded": (Overloaded, 503), "drop": (ServerError, None), "malformed": (ServerError, None),
        "context_length": (ContextTooLong, 400), "content_filter": (ContentFiltered, None), "auth": (AuthError, 400),
        "bad_request": (BadRequest, 400),
    },
}
FAULTS["openai_compatible"] = FAULTS["openai"]


async def _attempt(adapter: LLMAdapter, stream: bool, **kw: object) -> Completion:
    if stream:
        _, end = await collect(adapter.stream("hello", 20, 0.5, **kw))  # type: ignore[arg-type]
        return end
    return await adapter.generate("hello", 20, 0.5, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fault", list(FAULTS["openai"]))
async def test_every_fault_maps_to_its_class(
    kind: str, fault: str, stream: bool, make: Make, fake: FakeVendorServer
) -> None:
    expected, status = FAULTS[kind][fault]
    adapter = make(kind)
    fake.script(channel_of(kind), Fault(fault, retry_after=2.5))  # type: ignore[arg-type]
    with pytest.raises(expected) as info:
        await _attempt(adapter, stream)
    err = info.value
    assert type(err) is expected
    assert (err.provider, err.model, err.status) == (f"fake-{kind}", TEST_MODELS[kind], status)
    if status is not None or fault != "content_filter":  # a blocked 200 raises no SDK exception
        assert err.__cause__ is not None, "the SDK's (or aiohttp's) exception is kept as the cause"
        assert not type(err.__cause__).__module__.startswith("adapters")
    assert err.message
    if fault == "rate_limit":
        assert err.retry_after == 2.5
    assert fake.calls(channel_of(kind)) == 1, "SDK retries are off"
    # the adapter works again afterwards (connection pool not poisoned)
    assert (await _attempt(adapter, stream)).text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_slow_answer_past_the_timeout_is_timeout(
    kind: str, stream: bool, make: Make, fake: FakeVendorServer
) -> None:
    adapter = make(kind)
    fake.script(channel_of(kind), Fault("timeout", delay_s=5.0))
    t0 = time.perf_counter()
    with pytest.raises(Timeout) as info:
        await _attempt(adapter, stream, timeout_s=0.3)
    assert info.value.transient and info.value.__cause__ is not None
    if adapter.keeps_deadline and not stream:
        # its claim, which spares it the router's backstop timer: ended by its own 0.3 s, not the
        # backstop's 1.3 s nor the fake's 5 s (the margin is for a loaded machine)
        assert time.perf_counter() - t0 < 1.2


async def test_error_event_mid_stream_after_text(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    fake.script(channel_of(kind), Fault("stream_error", after_chunks=4))
    seen: list[str] = []
    with pytest.raises((ServerError, Overloaded)) as info:
        async for ev in adapter.stream("several words in this prompt", 100, 0.5):
            if isinstance(ev, TextDelta):
                seen.append(ev.text)
    assert seen, "text arrived before the error"
    assert info.value.transient


async def test_connection_cut_mid_stream_after_text(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    fake.script(channel_of(kind), Fault("drop", after_chunks=4))
    seen: list[str] = []
    with pytest.raises(ServerError) as info:
        async for ev in adapter.stream("several words in this prompt", 100, 0.5):
            if isinstance(ev, TextDelta):
                seen.append(ev.text)
    assert seen
    assert info.value.status is None


async def test_huge_prompt_against_a_small_context_window(kind: str, make: Make, fake: FakeVendorServer) -> None:
    fake.configure(context_window=1000)
    prompt = "lorem ipsum dolor sit amet " * 15_000  # ~100k tokens
    with pytest.raises(ContextTooLong):
        await make(kind).generate(prompt, 100, 0.5)
    assert fake.calls(channel_of(kind)) == 1
    assert len(repr(fake.last_body(channel_of(kind)))) > 400_000


async def test_api_key_never_appears_in_errors(kind: str, make: Make, fake: FakeVendorServer) -> None:
    key = TEST_KEYS[kind]
    adapter = make(kind)
    fake.script(channel_of(kind), "auth")
    with pytest.raises(AuthError) as info:
        await adapter.generate("hello", 10, 0.5)
    err = info.value
    texts = [str(err), repr(err), err.message, *map(str, err.args), repr(adapter),
             "".join(traceback.format_exception(err))]
    for text in texts:
        assert key not in text
    assert all(r.headers.get(h) in (None, "<redacted>") for r in fake.requests() for h in
               ("authorization", "x-api-key", "x-goog-api-key"))


async def test_missing_key_is_an_auth_error_without_a_request(
    kind: str, transport: str, fake: FakeVendorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind == "openai_compatible":
        pytest.skip("keyless OpenAI-compatible servers are allowed (see test_openai_compat)")
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    adapter = adapter_for(kind, fake, **_transport_options(transport))
    adapter._api_key = None  # type: ignore[attr-defined]
    with pytest.raises(AuthError, match="API key"):
        await adapter.generate("hello", 10, 0.5)
    assert fake.calls() == 0


async def test_leaving_a_stream_early_frees_the_connection(kind: str, make: Make) -> None:
    adapter = make(kind)
    events = adapter.stream("one two three four five six", 100, 0.5)
    first = await events.__anext__()
    assert isinstance(first, TextDelta)
    await events.aclose()  # type: ignore[attr-defined]
    assert (await adapter.generate("after", 10, 0.5)).text.endswith("after")


async def test_concurrent_requests_share_one_client(kind: str, make: Make, fake: FakeVendorServer) -> None:
    adapter = make(kind)
    prompts = [f"request number {i}" for i in range(20)]
    results = await asyncio.gather(*(adapter.generate(p, 50, 0.5) for p in prompts))
    assert [r.text.split(": ", 1)[1] for r in results] == prompts
    assert fake.calls(channel_of(kind)) == 20


async def test_aclose_then_reuse(kind: str, make: Make) -> None:
    adapter = make(kind)
    await adapter.generate("one", 10, 0.5)
    await adapter.aclose()
    assert (await adapter.generate("two", 10, 0.5)).text.endswith("two")
