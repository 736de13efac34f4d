"""Golden explain output for representative requests on the bundled default policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from syrupy.assertion import SnapshotAssertion

from engine.cli.app import cli

REQUESTS: dict[str, list[str]] = {
    "premium-code": ["--meta", "tier=premium", "Fix the bug:\n```python\ndef add(a, b):\n    return a - b\n```"],
    "math": ["What is the derivative of x^3 * sin(x)? Show the steps."],
    "chat": ["Hi! What's a good name for a golden retriever puppy?"],
    "summarize-short-budget": ["--max-tokens", "150",
                               "Summarize in two sentences: The library board met on Monday and agreed to extend "
                               "opening hours on weekends, starting in March, after a survey showed demand."],
    "translate": ["Translate into German: 'The train leaves at nine from platform four.'"],
    "stream-chat": ["--stream", "Hey, how's it going?"],
    "refused-max-tokens": ["--max-tokens", "70000", "Write me a very long novel."],
    "tools-skip-text-only": ["--tools", "1", "--max-tokens", "300", "Write a short poem about the sea at night."],
    "quota-spent": ["-m", "tenant=acme", "--quota-used", "tenant-daily-spend.cost_usd=5", "--max-tokens", "200",
                    "Hi there! How are you today?"],
}


def _masked(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["policy"] = "<digest>"
    return d


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_explain_json(name: str, snapshot: SnapshotAssertion) -> None:
    r = CliRunner().invoke(cli, ["explain", "--json", *REQUESTS[name]], catch_exceptions=False)
    assert r.exit_code in (0, 3)
    assert _masked(json.loads(r.output)) == snapshot


@pytest.mark.parametrize("name", ["premium-code", "tools-skip-text-only", "quota-spent"])
def test_explain_pretty(name: str, snapshot: SnapshotAssertion) -> None:
    r = CliRunner().invoke(cli, ["explain", *REQUESTS[name]], catch_exceptions=False)
    assert r.exit_code == (3 if name == "quota-spent" else 0)
    assert r.output == snapshot
