"""The request surface given two ways (one `Options`, or OpenAI-style keywords) is checked in one
place for the router and the adapters: an unknown keyword or both forms at once is refused, named."""

from __future__ import annotations

import pytest

from adapters import InvalidInput, SimulatedAdapter
from adapters.conversation import Options, options_of
from engine.errors import RequestError
from engine.routing.features import Request


def test_unknown_keyword_is_named_with_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match=r"unknown parameter\(s\) topk; known: tools, "):
        options_of(None, {"topk": 3})
    with pytest.raises(RequestError, match=r"unknown parameter\(s\) topk"):
        Request.of("hi", topk=3)


def test_options_and_keywords_together_are_refused() -> None:
    with pytest.raises(RequestError, match="not both"):
        Request.of("hi", options=Options(seed=1), seed=2)


async def test_an_adapter_refuses_the_same_way_before_any_call() -> None:
    adapter = SimulatedAdapter("sim", "m", time_scale=0)
    with pytest.raises(InvalidInput, match=r"unknown parameter\(s\) topk"):
        await adapter.generate("hi", topk=3)
    assert adapter.calls == 0
