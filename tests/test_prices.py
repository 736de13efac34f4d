"""`price: auto` and absent context windows from the genai-prices catalogue; the policy's own values win."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli.app import cli
from engine.policy.api import analyze_text
from engine.policy.prices import catalogue_version, lookup

POLICY = """version: 1
providers:
  openai: {adapter: openai, api_key: sk-test}
  anthropic: {adapter: anthropic, api_key: sk-ant-test}
  mistral: {adapter: openai_compatible, options: {endpoint: mistral}, api_key: m-test}
models:
  gpt-4o-mini: {provider: openai, price: auto, scores: {chat: 4}}
  haiku: {provider: anthropic, id: claude-haiku-4-5, price: {input: 0.9, output: 4.5}, scores: {chat: 4}}
  mixtral: {provider: mistral, id: open-mixtral-8x7b, price: auto, context_window: 32000, scores: {chat: 3}}
routes:
  - name: default
    candidates: [gpt-4o-mini, haiku, mixtral]
"""


def test_auto_prices_and_windows_come_from_the_catalogue_and_the_policy_wins() -> None:
    a = analyze_text(POLICY, "auto.yaml", env={})
    assert a.policy is not None and not a.errors, [d.format() for d in a.diagnostics]
    models = a.policy.models
    version = catalogue_version()
    mini = models["gpt-4o-mini"]
    assert (mini.price.input, mini.price.output, mini.context_window) == (0.15, 0.6, 128000)
    assert mini.price.source == mini.context_window_source == f"genai-prices {version}: openai/gpt-4o-mini"
    haiku = models["haiku"]  # its own price, the catalogue's window
    assert (haiku.price.input, haiku.price.output, haiku.price.source) == (0.9, 4.5, "policy")
    assert (haiku.context_window, haiku.context_window_source) == (
        200000, f"genai-prices {version}: anthropic/claude-haiku-4-5")
    mixtral = models["mixtral"]  # the catalogue's price through the endpoint row, its own window
    assert mixtral.price.source.endswith("mistral/mixtral-8x7b") and mixtral.price.input > 0
    assert (mixtral.context_window, mixtral.context_window_source) == (32000, "policy")


def test_a_model_in_neither_is_a_warning_for_its_price_and_an_error_for_its_window() -> None:
    text = POLICY.replace("gpt-4o-mini: {provider: openai, price: auto,",
                          "gpt-4o-mini: {provider: openai, id: gpt-nonexistent-9, price: auto, context_window: 1000,")
    a = analyze_text(text, "auto.yaml", env={})
    [warn] = [d for d in a.diagnostics if d.code == "price-unknown"]
    assert warn.severity == "warning" and warn.path == "$.models['gpt-4o-mini'].price"
    assert "gpt-nonexistent-9" in warn.message and "price: {input, output}" in warn.message
    assert a.policy is not None and a.policy.models["gpt-4o-mini"].price.source == "unknown"
    no_window = analyze_text(text.replace(", context_window: 1000", ""), "auto.yaml", env={})
    [err] = [d for d in no_window.diagnostics if d.code == "context-window-unknown"]
    assert err.severity == "error" and no_window.policy is None or no_window.errors
    assert lookup("gpt-nonexistent-9", "openai") is None


def test_explain_shows_where_each_price_came_from(tmp_path: Path) -> None:
    policy = tmp_path / "auto.yaml"
    policy.write_text(POLICY)
    r = CliRunner().invoke(cli, ["explain", "-p", str(policy), "--json", "hello"], catch_exceptions=False)
    prices = json.loads(r.stdout)["prices"]
    assert prices["haiku"]["price_source"] == "policy"
    assert prices["gpt-4o-mini"]["price_source"].startswith("genai-prices ")
    assert prices["mixtral"]["context_window_source"] == "policy"
    pretty = CliRunner().invoke(cli, ["explain", "-p", str(policy), "hello"], catch_exceptions=False).stdout
    assert "prices (USD per million tokens" in pretty
    assert "from genai-prices" in pretty and "from policy; window: genai-prices" in pretty


def test_a_policy_that_states_everything_explains_as_before() -> None:
    r = CliRunner().invoke(cli, ["explain", "--json", "hello"], catch_exceptions=False)  # the bundled policy
    assert "prices" not in json.loads(r.stdout)
