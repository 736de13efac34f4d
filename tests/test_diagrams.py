"""Mermaid sequence diagrams: `engine explain --mermaid` and docs/routing.md."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.app import cli
from engine.cli.diagrams import decision_sequence, mermaid_text
from engine.policy.api import compile_policy, load_policy
from engine.policy.bundled import default_policy_path
from engine.policy.compile import CompiledPolicy
from engine.routing.decide import decide, explain
from engine.routing.features import Request
from engine.routing.state import RuntimeState

ROOT = Path(__file__).resolve().parent.parent
CODE = "Fix this Python function:\n```python\ndef f(:\n    pass\n```"
_ID = r"[A-Za-z][\w]*"
_ARROW = r"(?:->>|-->>|--x|-x|--\)|-\)|-->|->)"
_MESSAGE = re.compile(rf"^({_ID})({_ARROW})({_ID}): (.+)$")
_NOTE = re.compile(rf"^Note (?:over|left of|right of) ({_ID})(?:,({_ID}))?: (.+)$")
_PARTICIPANT = re.compile(rf"^(?:participant|actor) ({_ID})(?: as (.+))?$")
_OPEN = re.compile(r"^(alt|opt|loop|par|critical|break|rect)(?: (.+))?$")
_ENTITY = re.compile(r"#(?:\d+|[a-z]+);")


def check_sequence(text: str) -> list[str]:
    """Validate the mermaid sequence-diagram subset we write; returns the participants in order.

    Every line must be a known statement, blocks must balance (`else` only inside `alt`), every
    message must name declared participants, and text must not hold a raw `;` or `#` (mermaid
    reads `;` as the end of a statement and `#...;` as an entity).
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert lines and lines[0] == "sequenceDiagram", lines[:1]
    declared: list[str] = []
    stack: list[str] = []
    for ln in lines[1:]:
        if ln == "autonumber":
            continue
        if m := _PARTICIPANT.match(ln):
            declared.append(m.group(1))
            _check_text(m.group(2) or "", ln)
        elif m := _MESSAGE.match(ln):
            assert m.group(1) in declared and m.group(3) in declared, ln
            _check_text(m.group(4), ln)
        elif m := _NOTE.match(ln):
            assert m.group(1) in declared and (m.group(2) is None or m.group(2) in declared), ln
            _check_text(m.group(3), ln)
        elif m := _OPEN.match(ln):
            stack.append(m.group(1))
            _check_text(m.group(2) or "", ln)
        elif ln == "else" or ln.startswith("else "):
            assert stack and stack[-1] == "alt", ln
            _check_text(ln[5:], ln)
        elif ln == "end":
            assert stack, "end without a block"
            stack.pop()
        else:
            raise AssertionError(f"not a mermaid sequence statement: {ln!r}")
    assert not stack, f"unclosed blocks: {stack}"
    return declared


def _check_text(text: str, line: str) -> None:
    bare = _ENTITY.sub("", text)
    assert ";" not in bare and "#" not in bare, line


@pytest.fixture(scope="module")
def compiled() -> CompiledPolicy:
    return compile_policy(load_policy(default_policy_path()))


def test_a_plan_becomes_nested_fallbacks(compiled: CompiledPolicy) -> None:
    d = explain(compiled, Request.of(CODE, meta={"tier": "premium"}))
    assert len(d.plan) >= 3
    text = decision_sequence(d, compiled)
    participants = check_sequence(text)
    assert participants[:3] == ["App", "Router", "Policy"]
    assert participants[-len(d.plan):] == [f"M{i}" for i in range(1, len(d.plan) + 1)]
    for i, model in enumerate(d.plan, 1):
        assert f"participant M{i} as {model} ({compiled.policy.models[model].provider})" in text
    assert len(re.findall(r"^\s*alt ", text, re.M)) == len(d.plan)
    assert len(re.findall(r"^\s*loop ", text, re.M)) == len(d.plan)  # retries: max_attempts is 2
    assert len(re.findall(r"Router->>Quotas: reserve", text)) == len(d.plan)  # the policy has quotas
    innermost = re.findall(r"^(\s*)Router--xApp: AllModelsFailed", text, re.M)
    assert len(innermost) == 1 and len(innermost[0]) == 4 * (len(d.plan) + 1)
    assert f"route {d.route} (query_type == 'code' and meta.tier == 'premium')" in text
    assert "opt response cache" not in text  # temperature 0.7: the default policy caches only temperature 0


def test_cacheable_requests_show_the_cache(compiled: CompiledPolicy) -> None:
    cached = decision_sequence(explain(compiled, Request.of("What are your hours?", temperature=0)), compiled)
    check_sequence(cached)
    assert "opt response cache" in cached
    streamed = explain(compiled, Request.of("What are your hours?", temperature=0, stream=True))
    assert "opt response cache" not in decision_sequence(streamed, compiled)


def test_without_retries_there_is_no_loop(compiled: CompiledPolicy) -> None:
    policy = compiled.policy
    once = compile_policy(dataclasses.replace(policy, retry=dataclasses.replace(policy.retry, max_attempts=1)))
    text = decision_sequence(explain(once, Request.of("hello")), once)
    check_sequence(text)
    assert "loop " not in text


def test_refusals_end_at_the_router(compiled: CompiledPolicy) -> None:
    refused = explain(compiled, Request.of("hello", max_tokens=200_000))
    text = decision_sequence(refused, compiled)
    check_sequence(text)
    assert text.rstrip().endswith("Router--xApp: RoutingRefused (nothing sent to any model)")
    assert "alt " not in text and "excluded" in text and "#lt;" in text  # "context window 128000 < ..."

    def over_quota(model: str, tokens: int, cost: float) -> tuple[str, bool]:
        return (f"quota 'q' has no room for {model}", False)

    blocked = decide(compiled, Request.of("hello"), RuntimeState(quota_probe=over_quota), explain=True)
    assert blocked.quota_refused
    text = decision_sequence(blocked, compiled)
    check_sequence(text)
    assert "Router--xApp: QuotaExceeded" in text


def test_user_text_is_escaped(compiled: CompiledPolicy) -> None:
    d = explain(compiled, Request.of("hi", meta={"team": "a;b#c<d>\nx"}))
    text = decision_sequence(d, compiled)
    check_sequence(text)
    assert "team=a#59;b#35;c#lt;d#gt; x" in text
    assert mermaid_text("x" * 500, 20) == "x" * 19 + "…"
    assert mermaid_text("a\n\n b") == "a b"


def test_explain_mermaid_command() -> None:
    ok = CliRunner().invoke(cli, ["explain", "--mermaid", "--meta", "tier=premium", CODE])
    assert ok.exit_code == 0, ok.output
    check_sequence(ok.output)
    refused = CliRunner().invoke(cli, ["explain", "--mermaid", "--max-tokens", "200000", "hello"])
    assert refused.exit_code == 3
    check_sequence(refused.output)


def test_docs_routing_diagrams_are_valid() -> None:
    doc = (ROOT / "docs" / "routing.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", doc, re.S)
    assert len(blocks) >= 8
    for block in blocks:
        check_sequence(block)
    headings = re.findall(r"^## (.+)$", doc, re.M)
    for topic in ("decision", "Retry", "Rate limited", "Circuit open", "Context too long", "Everything failed",
                  "Streaming"):
        assert any(topic.lower() in h.lower() for h in headings), topic
    assert "engine explain --mermaid" in doc


def test_the_validator_rejects_what_mermaid_rejects() -> None:
    with pytest.raises(AssertionError):
        check_sequence("sequenceDiagram\n    participant A\n    participant B\n    A->>B: hi; there\n")
    with pytest.raises(AssertionError):
        check_sequence("sequenceDiagram\n    participant A\n    participant B\n    alt x\n    A->>B: y\n")
    with pytest.raises(AssertionError):
        check_sequence("sequenceDiagram\n    participant A\n    A->>B hi\n")
    with pytest.raises(AssertionError):
        check_sequence("sequenceDiagram\n    participant A\n    opt x\n    else y\n    end\n")
