"""Client libraries beyond the vendor SDKs against `engine serve`: langchain-openai's tools and
structured output (over the OpenAI fake; skipped where the adapter does not declare them yet)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from adapters.openai import OpenAIAdapter
from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServerThread
from tests.test_serve_tools import tools_policy

pytestmark = pytest.mark.skipif(
    not {"tools", "tool_choice", "response_format"} <= OpenAIAdapter.supported_options,
    reason="the OpenAI adapter does not declare tools and response_format yet")


class GetWeather(pydantic.BaseModel):
    """Weather of a city."""

    city: str
    unit: str


class Forecast(pydantic.BaseModel):
    """A forecast."""

    city: str
    days: int
    rain: bool


@pytest.fixture
def server(fake: FakeVendorServer, tmp_path: Path) -> Iterator[ServerThread]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(tools_policy(fake))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        yield s


def chat(server: ServerThread, **kw: object) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-mini", base_url=server.url + "/v1", api_key="unused",  # type: ignore[arg-type]
                      max_retries=0, **kw)  # type: ignore[arg-type]


def test_bind_tools_and_the_tool_result(server: ServerThread) -> None:
    llm = chat(server).bind_tools([GetWeather])
    ask = HumanMessage("Weather in Oslo?")
    first = llm.invoke([ask])
    assert isinstance(first, AIMessage)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("GetWeather", {"city": "x", "unit": "x"})]
    answer = llm.invoke([ask, first, ToolMessage("cloudy", tool_call_id=first.tool_calls[0]["id"] or "")])
    assert answer.content == "Tool GetWeather returned: cloudy"


def test_bind_tools_streaming(server: ServerThread) -> None:
    llm = chat(server, streaming=True).bind_tools([GetWeather], tool_choice="GetWeather")
    chunks = list(llm.stream("Weather in Oslo?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c  # type: ignore[assignment]
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [  # type: ignore[attr-defined]
        ("GetWeather", {"city": "x", "unit": "x"})]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(server: ServerThread, method: str) -> None:
    llm = chat(server).with_structured_output(Forecast, method=method)  # type: ignore[arg-type]
    assert llm.invoke("Forecast for Oslo?") == Forecast(city="x", days=1, rain=True)
