"""The simulated adapter: deterministic text, latency and failures; scripting; streaming."""

from __future__ import annotations

from collections import Counter

import pytest

from adapters import (
    Completion,
    ContextTooLong,
    InvalidInput,
    Message,
    MidStream,
    Overloaded,
    Price,
    ProviderError,
    RateLimited,
    ServerError,
    SimulatedAdapter,
    StreamEnd,
    TextDelta,
    Timeout,
)
from adapters.base import Request


class FakeSleep:
    """Records requested sleeps instead of sleeping (an injected clock)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def sim(**kw: object) -> SimulatedAdapter:
    kw.setdefault("sleep", FakeSleep())
    return SimulatedAdapter("sim", "sim-model", **kw)  # type: ignore[arg-type]


async def test_same_seed_and_prompt_same_text() -> None:
    a, b = sim(seed=7), sim(seed=7)
    ra, rb = await a.generate("the same prompt", 200, 0.5), await b.generate("the same prompt", 200, 0.5)
    assert ra.text == rb.text and ra.text.startswith("[sim-model] re: the same prompt | ")
    assert (ra.input_tokens, ra.output_tokens) == (rb.input_tokens, rb.output_tokens)
    assert (await a.generate("the same prompt", 200, 0.5)).text == ra.text, "a retry gets the same text"
    assert (await sim(seed=8).generate("the same prompt", 200, 0.5)).text != ra.text
    assert (await a.generate("another prompt", 200, 0.5)).text != ra.text


async def test_latency_is_lognormal_between_the_quantiles_and_scaled() -> None:
    sleep = FakeSleep()
    a = sim(latency_ms=(100.0, 400.0), seed=1, time_scale=0.5, sleep=sleep)
    for i in range(400):
        await a.generate(f"prompt {i}", 50, 0.5)
    drawn = sorted(s / 0.5 * 1000 for s in sleep.calls)  # back to unscaled milliseconds
    assert len(drawn) == 400
    assert 80 <= drawn[200] <= 125, "median near p50"
    assert 280 <= drawn[380] <= 560, "95th percentile near p95"
    # reproducible
    again = FakeSleep()
    b = sim(latency_ms=(100.0, 400.0), seed=1, time_scale=0.5, sleep=again)
    for i in range(400):
        await b.generate(f"prompt {i}", 50, 0.5)
    assert again.calls == sleep.calls


async def test_failure_rate_picks_among_transient_and_rate_limit_errors() -> None:
    a = sim(failure_rate=0.5, seed=3)
    outcomes: Counter[str] = Counter()
    for i in range(400):
        try:
            await a.generate(f"p{i}", 20, 0.5)
            outcomes["ok"] += 1
        except ProviderError as e:
            assert e.provider == "sim" and e.model == "sim-model"
            outcomes[type(e).__name__] += 1
    assert a.calls == 400
    assert 150 <= outcomes["ok"] <= 250
    assert set(outcomes) == {"ok", "RateLimited", "ServerError", "Overloaded", "Timeout"}


async def test_faults_option_restricts_the_failures() -> None:
    a = sim(failure_rate=1.0, faults=["rate_limited"])
    for i in range(20):
        with pytest.raises(RateLimited) as info:
            await a.generate(f"p{i}", 20, 0.5)
        assert info.value.retry_after == 1.0 and info.value.status == 429


async def test_retry_of_a_failed_prompt_draws_again_and_reruns_repeat() -> None:
    async def sequence(seed: int) -> list[str]:
        a = sim(failure_rate=0.5, seed=seed)
        out: list[str] = []
        for _ in range(12):
            try:
                await a.generate("same prompt every time", 20, 0.5)
                out.append("ok")
            except ProviderError as e:
                out.append(type(e).__name__)
        return out

    first = await sequence(11)
    assert len(set(first)) > 1, "not stuck on one outcome"
    assert await sequence(11) == first


async def test_script_is_consumed_first_in_order() -> None:
    a = sim()

    def shout(req: Request) -> str:
        return req.messages[-1].content.upper()

    boom = ServerError("scripted", provider="sim", model="sim-model", status=500)
    a.script(RateLimited, "fixed text", boom, shout)
    with pytest.raises(RateLimited) as info:
        await a.generate("x", 10, 0.5)
    assert info.value.provider == "sim"
    assert (await a.generate("x", 10, 0.5)).text == "fixed text"
    with pytest.raises(ServerError) as info2:
        await a.generate("x", 10, 0.5)
    assert info2.value is boom
    assert (await a.generate("quiet", 10, 0.5)).text == "QUIET"
    assert (await a.generate("x", 10, 0.5)).text.startswith("[sim-model]"), "back to normal"
    assert a.calls == 5


async def test_invalid_input_does_not_count_as_a_call() -> None:
    a = sim()
    with pytest.raises(InvalidInput):
        await a.generate("   ", 10, 0.5)
    with pytest.raises(InvalidInput):
        a.stream("hi", 0, 0.5)
    assert a.calls == 0


async def collect(a: SimulatedAdapter, prompt: str, **kw: object) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    end = None
    async for ev in a.stream(prompt, 200, 0.5, **kw):  # type: ignore[arg-type]
        if isinstance(ev, TextDelta):
            deltas.append(ev.text)
        else:
            assert isinstance(ev, StreamEnd)
            end = ev.completion
    assert end is not None
    return deltas, end


async def test_stream_chunks_join_to_the_generate_text() -> None:
    a = sim(price=Price(1.0, 4.0))
    whole = await a.generate("stream a few words", 200, 0.5)
    deltas, end = await collect(a, "stream a few words")
    assert len(deltas) > 3 and "".join(deltas) == end.text == whole.text
    assert end.cost_usd == pytest.approx(whole.cost_usd) and end.cost_usd > 0


async def test_mid_stream_failure_after_some_chunks() -> None:
    a = sim()
    a.script(MidStream(Overloaded, after_chunks=2))
    seen: list[str] = []
    with pytest.raises(Overloaded):
        async for ev in a.stream("several words to stream here", 200, 0.5):
            if isinstance(ev, TextDelta):
                seen.append(ev.text)
    assert len(seen) == 2
    a.script(MidStream(Overloaded, after_chunks=2))
    with pytest.raises(Overloaded):
        await a.generate("in generate the failure is immediate", 200, 0.5)


async def test_latency_past_the_timeout_is_timeout() -> None:
    sleep = FakeSleep()
    a = sim(latency_ms=(5000.0, 5000.0), timeout_s=1.0, sleep=sleep)
    with pytest.raises(Timeout):
        await a.generate("slow", 10, 0.5)
    assert sleep.calls == [1.0], "waited the timeout, not the latency"
    with pytest.raises(Timeout):
        await a.generate("slow", 10, 0.5, timeout_s=0.25)


async def test_context_window_option() -> None:
    a = sim(context_window=1000)
    with pytest.raises(ContextTooLong):
        await a.generate("word " * 4000, 10, 0.5)
    assert (await a.generate("short", 10, 0.5)).text
    assert (await sim().generate("word " * 100_000, 10, 0.5)).text, "not enforced unless configured"


async def test_max_tokens_and_stop_shape_the_text() -> None:
    a = sim()
    c = await a.generate("a prompt with quite a few words in it to echo back", 5, 0.5)
    assert c.finish_reason == "length" and len(c.text) <= 20
    assert (await a.generate(messages=[Message("system", "s"), Message("user", "u")], max_tokens=50,
                             temperature=0.1)).text.startswith("[sim-model] re: u")


async def test_real_sleep_with_time_scale_zero_is_fast() -> None:
    a = SimulatedAdapter("sim", "m", latency_ms=(10_000.0, 20_000.0), time_scale=0.0)
    c = await a.generate("instant", 10, 0.5)
    assert c.latency_ms < 10_000


@pytest.mark.parametrize(
    "kw",
    [{"latency_ms": (10.0, 5.0)}, {"latency_ms": (-1.0, 5.0)}, {"failure_rate": 1.5}, {"time_scale": -1.0},
     {"faults": ["nope"]}, {"faults": []}, {"context_window": 0}, {"timeout_s": 0}],
)
def test_bad_settings_are_rejected(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        SimulatedAdapter("sim", "m", **kw)  # type: ignore[arg-type]
