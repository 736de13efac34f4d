"""Fallback and retries for every error class (DESIGN.md, runtime semantics)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from adapters.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)
from adapters.simulated import SimulatedAdapter
from engine.errors import AllModelsFailed
from engine.runtime.router import Router
from tests.runtime.conftest import POLICY, RowsFn, make_policy, sims


def err(cls: type[ProviderError], retry_after: float | None = None) -> ProviderError:
    return cls(f"scripted {cls.__name__}", provider="p", model="m", status=None, retry_after=retry_after)


@pytest.mark.parametrize("cls", [Timeout, ServerError, Overloaded])
async def test_transient_errors_retry_the_same_model_first(router: Router, adapters: dict[str, SimulatedAdapter],
                                                           cls: type[ProviderError]) -> None:
    adapters["a-small"].script(err(cls))
    r = await router.generate("hello")
    assert (r.model, r.attempts, r.fallbacks) == ("a-small", 2, 0)


@pytest.mark.parametrize("cls", [Timeout, ServerError, Overloaded])
async def test_transient_errors_fall_back_after_max_attempts(router: Router, adapters: dict[str, SimulatedAdapter],
                                                             cls: type[ProviderError]) -> None:
    adapters["a-small"].script(err(cls), err(cls))
    r = await router.generate("hello")
    assert (r.model, r.attempts, r.fallbacks) == ("b-mid", 3, 1)
    assert adapters["a-small"].calls == 2


async def test_rate_limited_falls_back_at_once_without_sleeping(router: Router,
                                                                 adapters: dict[str, SimulatedAdapter]) -> None:
    adapters["a-small"].script(err(RateLimited, retry_after=30))
    r = await router.generate("hello")
    assert (r.model, r.attempts) == ("b-mid", 2)
    assert adapters["a-small"].calls == 1


async def test_context_too_long_skips_to_a_larger_window(router: Router,
                                                         adapters: dict[str, SimulatedAdapter], rows: RowsFn) -> None:
    adapters["b-mid"].script(err(ContextTooLong))
    r = await router.generate("word " * 4000, max_tokens=100)  # ~5000 tokens: too big for a-small (4000)
    # b-mid overflowed: b-mid2 has the same 16k window so it is skipped; c-big serves
    assert r.model == "c-big"
    assert adapters["b-mid2"].calls == 0
    await router.aclose()
    attempts = rows("attempts")
    assert [(a["model"], a["outcome"], a["error_class"]) for a in attempts] == [
        ("b-mid", "error", "ContextTooLong"), ("b-mid2", "skipped", "Skipped"), ("c-big", "ok", None)]




async def test_auth_error_skips_other_models_of_that_provider(tmp_path: object) -> None:
    p = make_policy()
    ads = sims(p)
    ads["a-small"].script(err(ServerError), err(ServerError))
    ads["b-mid"].script(err(AuthError))
    router = Router(p, log_path=None, adapters=ads)
    r = await router.generate("hello")
    assert r.model == "c-big"
    assert ads["b-mid"].calls == 1 and ads["b-mid2"].calls == 0  # same provider pb: not tried
    await router.aclose()


async def test_content_filtered_falls_back(router: Router, adapters: dict[str, SimulatedAdapter]) -> None:
    adapters["a-small"].script(err(ContentFiltered))
    r = await router.generate("hello")
    assert (r.model, r.attempts) == ("b-mid", 2)


async def test_all_failed_lists_every_attempt_and_is_logged(router: Router, adapters: dict[str, SimulatedAdapter],
                                                            rows: RowsFn) -> None:
    for a in adapters.values():
        a.script(err(ServerError), err(ServerError))
    with pytest.raises(AllModelsFailed) as e:
        await router.generate("hello")
    assert [m for m, _, _ in e.value.attempts] == ["a-small", "a-small", "b-mid", "b-mid", "b-mid2", "b-mid2",
                                                  "c-big", "c-big"]
    assert all(cls == "ServerError" for _, cls, _ in e.value.attempts)
    await router.aclose()
    [req] = rows("requests")
    assert (req["outcome"], req["error_class"], req["attempts"], req["fallbacks"]) == (
        "failed", "AllModelsFailed", 8, 3)
    assert len(rows("attempts")) == 8


async def test_deadline_covers_the_whole_request() -> None:
    p = make_policy(base=make_policy_text_with_deadline())
    # every model takes 2 s: the first attempt gets the whole 0.5 s deadline as its timeout
    slow = [SimulatedAdapter(m.provider, m.id, latency_ms=(2000, 2000), time_scale=1.0) for m in p.models.values()]
    router = Router(p, log_path=None, adapters=dict(zip(p.models, slow, strict=True)))
    with pytest.raises(AllModelsFailed) as e:
        await router.generate("hello")
    assert any(cls == "Timeout" for _, cls, _ in e.value.attempts)
    assert sum(a.calls for a in slow) == 1  # no time left to walk the rest of the plan
    await router.aclose()


def make_policy_text_with_deadline() -> str:
    from tests.runtime.conftest import POLICY

    return POLICY.replace("deadline_s: 10", "deadline_s: 0.5")


async def test_streaming_falls_back_only_before_the_first_token(router: Router,
                                                                adapters: dict[str, SimulatedAdapter]) -> None:
    from adapters.simulated import MidStream
    from engine.runtime.result import StreamDone

    adapters["a-small"].script(err(ServerError), err(ServerError))
    events = [e async for e in router.stream("hello there")]
    assert isinstance(events[-1], StreamDone) and events[-1].result.model == "b-mid"
    text = "".join(e.text for e in events[:-1])  # type: ignore[union-attr]
    assert text == events[-1].result.text

    adapters["a-small"].script(MidStream(ServerError, after_chunks=2))
    got = []
    with pytest.raises(AllModelsFailed):
        async for e in router.stream("hello again"):
            got.append(e)
    assert len(got) == 2  # two chunks reached the caller, then the error; no fallback after that
    assert adapters["b-mid"].calls == 1  # only the first stream above


class _Overrunning(SimulatedAdapter):
    """An SDK that does not keep its own timeout: it never answers."""

    keeps_deadline = False

    async def _complete(self, request: Any) -> Any:
        await asyncio.sleep(30)
        raise AssertionError("the router's backstop should have ended this call")


async def test_backstop_timer_ends_a_call_whose_adapter_overruns_its_timeout() -> None:
    text = POLICY.replace("pa: {adapter: simulated}", "pa: {adapter: simulated, timeout_s: 0.05}")
    p = make_policy(base=text.replace("max_attempts: 2", "max_attempts: 1"))
    adapters: dict[str, Any] = sims(p)
    adapters["a-small"] = _Overrunning("pa", "a-small", time_scale=0)
    router = Router(p, log_path=None, adapters=adapters)
    t0 = time.perf_counter()
    result = await router.generate("hello")
    # the backstop fires at the attempt's timeout + 1 s, well before the adapter's 30 s
    assert time.perf_counter() - t0 < 10
    assert result.model == "b-mid" and result.fallbacks == 1
    await router.aclose()
