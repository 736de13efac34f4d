"""Policy tests: YAML cases of (request, expected decision), run against a compiled policy.

The same runner backs `engine test` and the project's own parametrized pytest, so a case
means the same thing everywhere. A malformed case is that case's error (with its line); the
other cases of the file still run. `coverage` reports which routes, candidates, fallbacks and
quotas no case exercised.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from engine.errors import RequestError
from engine.policy.compile import CompiledPolicy
from engine.policy.model import FEATURES
from engine.routing.decide import Decision
from engine.routing.features import Request
from engine.routing.state import RuntimeState
from engine.routing.why import QuotaUsed, explain_request

Outcome = Literal["PASS", "FAIL", "ERROR"]
REQUEST_KEYS = frozenset({
    "prompt", "messages", "max_tokens", "temperature", "stream", "meta", "has_tools", "has_images", "system",
    "tools", "tool_choice", "images", "response_format", "json_schema", "needs", "prompt_tokens",
    "prompt_tokens_at_least", "request_id",
})
STATE_KEYS = frozenset({"open_circuits", "demoted", "unavailable", "latency_ms", "in_flight", "quota_used"})
_CASE_KEYS = {"name", "request", "expect", "state"}
_PLACEHOLDER = "(a prompt of stated size)"


class TestFileError(ValueError):
    """A test file is malformed as a whole; the message names the file."""


@dataclass(frozen=True, slots=True)
class Case:
    """One policy test case; `error` is set when the case itself is malformed."""

    name: str
    request: Mapping[str, Any]
    expect: Mapping[str, Any]
    state: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0
    """1-based line of the case in its file (0 when not read from a file)."""
    error: str | None = None


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


def _case_lines(text: str) -> list[int]:
    """1-based line of each item of the top-level `cases:` list (empty if the shape is off)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for k, v in root.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "cases" and isinstance(v, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in v.value]
    return []


def _case_problem(c: Any) -> str | None:
    if not isinstance(c, dict) or "request" not in c or "expect" not in c:
        return "each case needs `request` and `expect`"
    extra = set(c) - _CASE_KEYS
    if extra:
        return f"unknown key(s) {', '.join(sorted(extra))}; a case has {', '.join(sorted(_CASE_KEYS))}"
    if not isinstance(c["request"], dict):
        return "request must be a mapping"
    bad = set(c["request"]) - REQUEST_KEYS
    if bad:
        return f"request: unknown key(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(REQUEST_KEYS))}"
    if not isinstance(c["expect"], dict) or not c["expect"]:
        return "expect: give at least one field of explain's output"
    state = c.get("state") or {}
    if not isinstance(state, dict) or set(state) - STATE_KEYS:
        return f"state: allowed keys are {', '.join(sorted(STATE_KEYS))}"
    return None


def load_test_file(path: str | Path) -> TestFile:
    """Parse a test file; `policy:` is resolved relative to the file.

    Raises:
        TestFileError: the file cannot be read, is not YAML, or is not a mapping with `cases:`.
            A malformed case does not raise: it becomes a `Case` with `error` set.
    """
    p = Path(path)
    try:
        text = p.read_text("utf-8")
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise TestFileError(f"{p}: cannot read test file: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise TestFileError(f"{p}: a test file is a mapping with a `cases:` list")
    unknown = set(data) - {"policy", "cases"}
    if unknown:
        raise TestFileError(f"{p}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    lines = _case_lines(text)
    cases = []
    for i, c in enumerate(data["cases"]):
        line = lines[i] if i < len(lines) else 0
        name = str(c.get("name", f"case {i}")) if isinstance(c, dict) else f"case {i}"
        problem = _case_problem(c)
        if problem is not None:
            cases.append(Case(name=name, request={}, expect={}, line=line,
                              error=f"{p}:{line}: cases[{i}]: {problem}"))
            continue
        cases.append(Case(name=name, request=c["request"], expect=c["expect"], state=c.get("state") or {},
                          line=line))
    policy = (p.parent / data["policy"]).resolve() if data.get("policy") else None
    return TestFile(path=p, policy=policy, cases=tuple(cases))


# -- requests -------------------------------------------------------------------------------------


def _tools(spec: Any) -> list[Any]:
    if isinstance(spec, bool) or not isinstance(spec, (int, list)):
        raise RequestError("tools: give a number of tools or a list of tool definitions")
    if isinstance(spec, int):
        if spec < 0:
            raise RequestError("tools: the number of tools must be >= 0")
        return [{"type": "function", "function": {"name": f"tool_{i + 1}", "parameters": {"type": "object"}}}
                for i in range(spec)]
    return spec


def _images(spec: Any) -> list[str]:
    if isinstance(spec, bool) or not isinstance(spec, (int, list)):
        raise RequestError("images: give a number of images or a list of image URLs")
    if isinstance(spec, int):
        return [f"https://example.com/image-{i + 1}.png" for i in range(spec)]
    if not all(isinstance(u, str) for u in spec):
        raise RequestError("images: every image is a URL (http(s) or data:)")
    return spec


def build_request(r: Mapping[str, Any]) -> Request:
    """An engine `Request` from a test case's `request:` (also what `engine explain` builds).

    Keys: `prompt` or `messages` (OpenAI shapes), `system`, `max_tokens`, `temperature`,
    `stream`, `meta`, `tools` (N or definitions), `tool_choice`, `images` (N or URLs, added to
    the last user message), `response_format`, `json_schema` (a schema: response_format
    json_schema), `needs` (features stated directly), `has_tools`, `has_images`,
    `prompt_tokens` / `prompt_tokens_at_least` (the size instead of the text), `request_id`.

    Raises:
        RequestError: a malformed request.
    """
    messages: list[Any] | None = list(r["messages"]) if r.get("messages") is not None else None
    prompt = r.get("prompt")
    if prompt is None and messages is None and (r.get("prompt_tokens") is not None or r.get("prompt_tokens_at_least")):
        prompt = _PLACEHOLDER
    if messages is None:
        if prompt is None:
            raise RequestError("give prompt or messages (or prompt_tokens)")
        messages = ([{"role": "system", "content": r["system"]}] if r.get("system") is not None else []) + [
            {"role": "user", "content": prompt}]
    if r.get("images"):
        messages = _with_images(messages, _images(r["images"]))
    surface: dict[str, Any] = {}
    if r.get("tools") is not None:
        surface["tools"] = _tools(r["tools"])
    if r.get("tool_choice") is not None:
        surface["tool_choice"] = r["tool_choice"]
    if r.get("response_format") is not None:
        surface["response_format"] = r["response_format"]
    elif r.get("json_schema") is not None:
        surface["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "output", "schema": r["json_schema"]}}
    req = Request.of(messages=messages, max_tokens=r.get("max_tokens", 1000), temperature=r.get("temperature", 0.7),
                     stream=bool(r.get("stream", False)), meta=r.get("meta"),
                     has_tools=bool(r.get("has_tools", False)), has_images=bool(r.get("has_images", False)),
                     request_id=str(r.get("request_id", "")), prompt_tokens=r.get("prompt_tokens"),
                     prompt_tokens_at_least=r.get("prompt_tokens_at_least") or 0, **surface)
    needs = r.get("needs")
    if needs is not None:
        if not isinstance(needs, list) or set(needs) - set(FEATURES):
            raise RequestError(f"needs: a list of {', '.join(FEATURES)}")
        req = dataclasses.replace(req, stated_needs=frozenset(needs), has_tools=req.has_tools or "tools" in needs,
                                  has_images=req.has_images or "vision" in needs)
    return req


def _with_images(messages: list[Any], urls: Sequence[str]) -> list[Any]:
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        m = out[i]
        if isinstance(m, Mapping) and m.get("role") == "user":
            content = m.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
            parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
            out[i] = {**m, "content": parts}
            return out
    raise RequestError("images: the request has no user message to attach them to")


def build_state(s: Mapping[str, Any]) -> tuple[RuntimeState, QuotaUsed]:
    """Runtime state and stated quota usage from a case's `state:` (also `engine explain --state`).

    Raises:
        ValueError: a malformed value.
    """
    def reasons(v: Any) -> dict[str, str]:
        if isinstance(v, Mapping):
            return {str(k): str(x) for k, x in v.items()}
        return {str(m): "set by test" for m in v or ()}

    used = s.get("quota_used") or {}
    if not isinstance(used, Mapping):
        raise ValueError("state.quota_used: a mapping of quota name to {measure: amount}")
    state = RuntimeState(
        open_circuits=reasons(s.get("open_circuits")), demoted=reasons(s.get("demoted")),
        unavailable=reasons(s.get("unavailable")),
        latency_ms={str(k): (float(v[0]), float(v[1])) for k, v in (s.get("latency_ms") or {}).items()},
        in_flight={str(k): int(v) for k, v in (s.get("in_flight") or {}).items()})
    return state, used


# -- running --------------------------------------------------------------------------------------


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
    """Explain the case's request and compare each expected field.

    `refused: true` matches any refusal; `refused: quota` (or `no_route`, `no_model`) a kind.
    """
    if case.error is not None:
        return CaseResult(case, "ERROR", error=case.error)
    try:
        state, used = build_state(case.state)
        explained = explain_request(compiled, build_request(case.request), state, quota_used=used)
    except (RequestError, TypeError, ValueError) as e:
        where = f"line {case.line}: " if case.line else ""
        return CaseResult(case, "ERROR", error=f"{where}bad request or state: {e}")
    decision, actual = explained.decision, explained.report
    if "candidates" in case.expect and isinstance(case.expect["candidates"], Mapping):
        # `candidates: {gpt-4o: {eligible: false}}` checks chosen models by name
        actual["candidates"] = {c["model"]: c for c in actual["candidates"]}
    if "quotas" in case.expect and isinstance(case.expect["quotas"], Mapping):
        actual["quotas"] = {q["name"]: q for q in actual["quotas"]}
    mismatches = []
    for key, want in case.expect.items():
        if key not in actual:
            return CaseResult(case, "ERROR", error=f"unknown expectation {key!r}; use any of: "
                              f"{', '.join(sorted(actual))}", decision=decision)
        got = actual[key]
        if key == "refused" and want is True:
            ok = got is not False
        else:
            ok = _matches(want, got)
        if not ok:
            mismatches.append((key, want, got))
    return CaseResult(case, "FAIL" if mismatches else "PASS", tuple(mismatches), decision=decision)


# -- coverage -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the cases of one policy exercised.

    Attributes:
        items: kind (route, candidate, fallback, quota) -> every item of that kind, as a label.
        covered: the labels some case exercised.
    """

    items: Mapping[str, tuple[str, ...]]
    covered: frozenset[str]

    def percent(self, kind: str | None = None) -> float:
        """Share of the items (of one kind, or all) exercised, 0-100; 100 when there are none."""
        labels = [x for k, xs in self.items.items() if kind in (None, k) for x in xs]
        if not labels:
            return 100.0
        return 100.0 * sum(1 for x in labels if x in self.covered) / len(labels)

    def missed(self) -> list[tuple[str, str]]:
        """(kind, label) of each item no case exercised."""
        return [(k, x) for k, xs in self.items.items() for x in xs if x not in self.covered]

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {"percent": round(self.percent(), 1),
                "by_kind": {k: round(self.percent(k), 1) for k in self.items},
                "missed": [{"kind": k, "item": x} for k, x in self.missed()]}


def coverage(compiled: CompiledPolicy, results: Iterable[CaseResult]) -> Coverage:
    """Routes matched, candidates and fallbacks planned, quotas that shaped a decision or were
    given usage, over `results` (cases of this policy)."""
    policy = compiled.policy
    items: dict[str, list[str]] = {"route": [], "candidate": [], "fallback": [], "quota": []}
    for cr in compiled.routes:
        r = cr.route.name
        items["route"].append(r)
        items["candidate"].extend(f"{r}: {m.name}" for m in cr.pool)
        items["fallback"].extend(f"{r}: {m.name} (fallback)" for m in cr.fallback)
    items["quota"] = [q.name for q in policy.quotas]
    covered: set[str] = set()
    for res in results:
        d = res.decision
        if d is None:
            continue
        for q in res.case.state.get("quota_used") or {}:
            covered.add(str(q))
        if d.route is None:
            continue
        covered.add(d.route)
        planned = set(d.plan)
        for m, _, _, reason, role in d.rows:
            if m.name in planned:
                covered.add(f"{d.route}: {m.name}" + (" (fallback)" if role == "fallback" else ""))
            if reason and reason.startswith("quota: quota '"):
                covered.add(reason.split("'")[1])
    return Coverage(items={k: tuple(dict.fromkeys(v)) for k, v in items.items()}, covered=frozenset(covered))


def format_value(v: Any) -> str:
    """A value as the FAILURES section shows it."""
    return json.dumps(v, ensure_ascii=False, sort_keys=True) if not isinstance(v, str) else repr(v)
