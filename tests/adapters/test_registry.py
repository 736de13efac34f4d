"""build_adapter: kinds, options, lazy SDK imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from adapters import (
    ADAPTER_KINDS,
    AnthropicAdapter,
    BadRequest,
    GeminiAdapter,
    InvalidInput,
    OpenAIAdapter,
    OpenAICompatibleAdapter,
    Price,
    SimulatedAdapter,
    build_adapter,
)
from adapters.openai_http import OpenAICompatibleHTTPAdapter, OpenAIHTTPAdapter

BASE = {"api_key": "k", "base_url": "http://127.0.0.1:9/v1", "timeout_s": 5.0, "price": Price(1, 2)}


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("openai", OpenAIHTTPAdapter), ("anthropic", AnthropicAdapter), ("gemini", GeminiAdapter),
     ("openai_compatible", OpenAICompatibleHTTPAdapter), ("simulated", SimulatedAdapter)],
)
def test_each_kind(kind: str, cls: type) -> None:
    a = build_adapter(kind, provider="p", model="m", options={}, **BASE)  # type: ignore[arg-type]
    assert type(a) is cls and a.kind == kind
    assert (a.provider, a.model, a.timeout_s, a.price) == ("p", "m", 5.0, Price(1, 2))
    assert set(ADAPTER_KINDS) == {"openai", "anthropic", "gemini", "openai_compatible", "simulated"}


def test_simulated_options_from_a_policy_mapping() -> None:
    a = build_adapter("simulated", provider="sim", model="m", api_key=None, base_url=None, timeout_s=3, price=None,
                      options={"adapter": "simulated", "latency_ms": {"p50": 300, "p95": 900}, "failure_rate": 0.1,
                               "seed": 4, "time_scale": 0.0, "limits": {"rpm": 5}})
    assert isinstance(a, SimulatedAdapter)
    assert (a.latency_ms, a.failure_rate, a.seed, a.time_scale) == ((300.0, 900.0), 0.1, 4, 0.0)
    b = build_adapter("simulated", provider="s", model="m", api_key=None, base_url=None, timeout_s=3, price=None,
                      options={"latency_ms": [5, 10]})
    assert isinstance(b, SimulatedAdapter) and b.latency_ms == (5.0, 10.0)


def test_unknown_kind_and_options() -> None:
    with pytest.raises(InvalidInput, match="unknown adapter 'bedrock'"):
        build_adapter("bedrock", provider="p", model="m", options={}, **BASE)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown option.*latency_ms.*openai"):
        build_adapter("openai", provider="p", model="m", options={"latency_ms": 5}, **BASE)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="latency_ms"):
        build_adapter("simulated", provider="p", model="m", options={"latency_ms": "fast"},
                      **BASE)  # type: ignore[arg-type]


def test_missing_sdk_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "anthropic" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match="pip install 'anthropic"):
        build_adapter("anthropic", provider="p", model="m", options={}, **BASE)  # type: ignore[arg-type]


def test_importing_and_building_does_not_import_sdks() -> None:
    code = (
        "import sys, adapters\n"
        "a = adapters.build_adapter('openai', provider='p', model='m', api_key='k', base_url=None, timeout_s=1,"
        " price=None, options={})\n"
        "b = adapters.build_adapter('gemini', provider='p', model='m', api_key='k', base_url=None, timeout_s=1,"
        " price=None, options={})\n"
        "print(sorted(m for m in ('openai', 'anthropic', 'google.genai', 'httpx2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("kind", "sdk"), [("openai", OpenAIAdapter), ("openai_compatible", OpenAICompatibleAdapter)])
def test_the_lean_transport_is_the_default_and_sdk_opts_out(kind: str, sdk: type) -> None:
    lean = build_adapter(kind, provider="p", model="m", options={}, **BASE)  # type: ignore[arg-type]
    ref = build_adapter(kind, provider="p", model="m", options={"transport": "sdk"}, **BASE)  # type: ignore[arg-type]
    assert type(ref) is sdk and isinstance(lean, sdk) and type(lean) is not sdk
    assert (lean.supported_options, lean.supports_images) == (ref.supported_options, ref.supports_images)


@pytest.mark.parametrize("kind", ["openai", "openai_compatible", "anthropic", "gemini"])
def test_pass_through_sets_the_extra_body_fields(kind: str) -> None:
    a = build_adapter(kind, provider="p", model="m", options={"pass_through": ["top_k", "store"]},
                      **BASE)  # type: ignore[arg-type]
    assert a.extra_body_fields == frozenset({"top_k", "store"})
    assert build_adapter(kind, provider="p", model="m", options={}, **BASE).extra_body_fields == frozenset()  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["top_k", [1], [""], {"top_k": True}])
def test_pass_through_must_be_a_list_of_names(bad: object) -> None:
    with pytest.raises(InvalidInput, match="pass_through must be a list"):
        build_adapter("openai", provider="p", model="m", options={"pass_through": bad}, **BASE)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="may not name messages, model"):
        build_adapter("openai", provider="p", model="m", options={"pass_through": ["model", "messages", "top_k"]},
                      **BASE)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown option.*pass_through"):
        build_adapter("simulated", provider="p", model="m", options={"pass_through": ["top_k"]},
                      **BASE)  # type: ignore[arg-type]


async def test_an_extra_field_not_let_through_is_refused_before_the_call() -> None:
    a = build_adapter("openai", provider="p", model="m", options={"pass_through": ["top_k"]},
                      **BASE)  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="min_p is not a body field the policy lets through by openai model m"):
        await a.generate("hi", 10, 0.5, extra_body={"top_k": 5, "min_p": 0.1})


def test_simulated_features_per_model_id() -> None:
    opts = {"features": {"textonly-1": ["streaming"], "seer-1": ["streaming", "vision"]}}
    text = build_adapter("simulated", provider="s", model="textonly-1", options=opts, **BASE)  # type: ignore[arg-type]
    seer = build_adapter("simulated", provider="s", model="seer-1", options=opts, **BASE)  # type: ignore[arg-type]
    other = build_adapter("simulated", provider="s", model="other", options=opts, **BASE)  # type: ignore[arg-type]
    assert isinstance(text, SimulatedAdapter) and isinstance(seer, SimulatedAdapter)
    assert isinstance(other, SimulatedAdapter)
    assert (text.features, text.supports_images, "tools" in text.supported_options) == (
        frozenset({"streaming"}), False, False)
    assert seer.supports_images and "response_format" not in seer.supported_options
    assert other.features == frozenset({"tools", "json", "vision", "streaming"})
    every = build_adapter("simulated", provider="s", model="m", options={"features": ["json"]},
                          **BASE)  # type: ignore[arg-type]
    assert isinstance(every, SimulatedAdapter) and every.features == frozenset({"json"})
    with pytest.raises(InvalidInput, match="unknown feature.*telepathy"):
        build_adapter("simulated", provider="s", model="m", options={"features": ["telepathy"]},
                      **BASE)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="features must be a list"):
        build_adapter("simulated", provider="s", model="m", options={"features": "tools"},
                      **BASE)  # type: ignore[arg-type]


_POLICY = """version: 1
providers:
  up: {{adapter: {adapter}, api_key: sk-x, base_url: 'http://127.0.0.1:9/v1', options: {options}}}
models:
  m: {{provider: up, id: m, price: {{input: 1, output: 1}}, context_window: 1000, scores: {{chat: 1}}}}
routes:
  - name: default
    strategy: cheapest
"""


@pytest.mark.parametrize(("adapter", "options", "ok"), [
    ("openai", "{pass_through: [top_k, store]}", True),
    ("gemini", "{pass_through: [top_k]}", True),
    ("anthropic", "{pass_through: [top_k]}", True),
    ("openai_compatible", "{pass_through: [min_p], transport: sdk}", True),
    ("openai", "{pass_through: [model]}", False),
    ("openai", "{pass_through: top_k}", False),
    ("simulated", "{pass_through: [top_k]}", False),
    ("simulated", "{features: [tools, json]}", True),
    ("simulated", "{features: {m: [streaming], other: []}}", True),
    ("simulated", "{features: [tool]}", False),
    ("openai", "{features: [tools]}", False),
])
def test_the_schema_knows_pass_through_and_features(adapter: str, options: str, ok: bool) -> None:
    from engine.policy.api import analyze_text

    text = _POLICY.format(adapter=adapter, options=options)
    if adapter == "simulated":
        text = text.replace("api_key: sk-x, base_url: 'http://127.0.0.1:9/v1', ", "")
    errors = [d.message for d in analyze_text(text).errors]
    assert (errors == []) is ok, errors
