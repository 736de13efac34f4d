"""Policy tests: YAML cases of (request, expected decision), run against a compiled policy.

The same runner backs `engine test` and the project's own parametrized pytest, so a case
means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from engine.errors import RequestError
from engine.policy.compile import CompiledPolicy
from engine.routing.decide import Decision, explain
from engine.routing.features import Request
from engine.routing.state import RuntimeState

Outcome = Literal["PASS", "FAIL", "ERROR"]
_REQUEST_KEYS = {"prompt", "messages", "max_tokens", "temperature", "stream", "meta", "has_tools", "has_images",
                 "system"}
_STATE_KEYS = {"open_circuits", "demoted", "unavailable", "latency_ms"}


class TestFileError(ValueError):
    """A test file is malformed; the message names the file and the case."""


@dataclass(frozen=True, slots=True)
class Case:
    """One policy test case."""

    name: str
    request: Mapping[str, Any]
    expect: Mapping[str, Any]
    state: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """What happened to one case."""

    case: Case
    outcome: Outcome
    mismatches: tuple[tuple[str, Any, Any], ...] = ()
    """(field, expected, actual) for each expectation that did not hold."""
    error: str | None = None
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class TestFile:
    """A parsed test file: the policy it targets (if it names one) and its cases."""

    path: Path
    policy: Path | None
    cases: tuple[Case, ...]


def load_test_file(path: str | Path) -> TestFile:
    """Parse a test file; `policy:` is resolved relative to the file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TestFileError(f"{p}: cannot read test file: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise TestFileError(f"{p}: a test file is a mapping with a `cases:` list")
    unknown = set(data) - {"policy", "cases"}
    if unknown:
        raise TestFileError(f"{p}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    cases = []
    for i, c in enumerate(data["cases"]):
        where = f"{p}: cases[{i}]"
        if not isinstance(c, dict) or "request" not in c or "expect" not in c:
            raise TestFileError(f"{where}: each case needs `request` and `expect`")
        extra = set(c) - {"name", "request", "expect", "state"}
        if extra:
            raise TestFileError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        if not isinstance(c["request"], dict) or set(c["request"]) - _REQUEST_KEYS:
            raise TestFileError(f"{where}.request: allowed keys are {', '.join(sorted(_REQUEST_KEYS))}")
        if not isinstance(c["expect"], dict) or not c["expect"]:
            raise TestFileError(f"{where}.expect: give at least one field of explain's output")
        state = c.get("state") or {}
        if not isinstance(state, dict) or set(state) - _STATE_KEYS:
            raise TestFileError(f"{where}.state: allowed keys are {', '.join(sorted(_STATE_KEYS))}")
        cases.append(Case(name=str(c.get("name", f"case {i}")), request=c["request"], expect=c["expect"],
                          state=state))
    policy = (p.parent / data["policy"]).resolve() if data.get("policy") else None
    return TestFile(path=p, policy=policy, cases=tuple(cases))


def _request(r: Mapping[str, Any]) -> Request:
    messages = r.get("messages")
    if messages is None and r.get("system") is not None:
        messages = [("system", r["system"]), ("user", r.get("prompt", ""))]
        prompt = None
    else:
        prompt = r.get("prompt") if messages is None else None
    return Request.of(prompt, messages=messages, max_tokens=r.get("max_tokens", 1000),
                      temperature=r.get("temperature", 0.7), stream=bool(r.get("stream", False)),
                      meta=r.get("meta"), has_tools=bool(r.get("has_tools", False)),
                      has_images=bool(r.get("has_images", False)))


def _state(s: Mapping[str, Any]) -> RuntimeState:
    def reasons(v: Any) -> dict[str, str]:
        if isinstance(v, Mapping):
            return {str(k): str(x) for k, x in v.items()}
        return {str(m): "set by test" for m in v or ()}

    return RuntimeState(open_circuits=reasons(s.get("open_circuits")), demoted=reasons(s.get("demoted")),
                        unavailable=reasons(s.get("unavailable")),
                        latency_ms={str(k): (float(v[0]), float(v[1])) for k, v in (s.get("latency_ms") or {}).items()})


def _matches(expected: Any, actual: Any) -> bool:
    """Mappings match as subsets, lists element-wise, everything else by equality."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and _matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(_matches(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, float) or isinstance(actual, float):
        try:
            return abs(float(expected) - float(actual)) <= 1e-9 * max(1.0, abs(float(expected)))
        except (TypeError, ValueError):
            return False
    return bool(expected == actual)


def run_case(compiled: CompiledPolicy, case: Case) -> CaseResult:
    """Explain the case's request and compare each expected field."""
    try:
        decision = explain(compiled, _request(case.request), _state(case.state))
    except (RequestError, TypeError, ValueError) as e:
        return CaseResult(case, "ERROR", error=f"bad request: {e}")
    actual = decision.as_dict()
    actual["refused"] = not decision.plan
    if "candidates" in case.expect and isinstance(case.expect["candidates"], Mapping):
        # `candidates: {gpt-4o: {eligible: false}}` checks chosen models by name
        actual["candidates"] = {c["model"]: c for c in actual["candidates"]}
    mismatches = []
    for key, want in case.expect.items():
        if key not in actual:
            return CaseResult(case, "ERROR", error=f"unknown expectation {key!r}; use any of: "
                              f"{', '.join(sorted(actual))}", decision=decision)
        if not _matches(want, actual[key]):
            mismatches.append((key, want, actual[key]))
    return CaseResult(case, "FAIL" if mismatches else "PASS", tuple(mismatches), decision=decision)
