"""docs/policy.md stays true to the code: the generated schema reference, the diagnostic codes,
the documented defaults, the example policies in the text, and the production example policy."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from engine.policy.api import analyze_policy, analyze_text, compile_policy

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "policy.md"
POLICY_SOURCES = sorted((ROOT / "engine" / "policy").glob("*.py"))
PRODUCTION = ROOT / "policies" / "production.example.yaml"
PRODUCTION_TESTS = ROOT / "policies" / "tests" / "production.yaml"
PRODUCTION_ENV = {"ANTHROPIC_API_KEY": "x", "OPENAI_API_KEY": "x", "GEMINI_API_KEY": "x", "MISTRAL_API_KEY": "x"}


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_policy_reference", ROOT / "docs" / "gen_policy_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being built
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _section(text: str, start: str, end: str) -> str:
    i, j = text.find(start), text.find(end)
    assert 0 <= i < j, f"markers {start} / {end} missing from {DOC}"
    return text[i : j + len(end)]


# -- the generated schema reference ----------------------------------------------------------------


def test_generated_schema_reference_is_current() -> None:
    text = DOC.read_text("utf-8")
    expected = gen.render(gen.load_schema())
    assert _section(text, gen.START, gen.END) == expected, (
        "docs/policy.md is stale: run `python docs/gen_policy_reference.py`"
    )
    assert gen.main(["--check"]) == 0


def test_check_mode_fails_on_a_stale_file_and_regeneration_fixes_it(tmp_path: Path) -> None:
    doc = tmp_path / "policy.md"
    shutil.copy(DOC, doc)
    text = doc.read_text("utf-8")
    head, generated = text.split(gen.START)
    assert "| `retry.max_attempts` |" in generated
    doc.write_text(head + gen.START + generated.replace("| `retry.max_attempts` |", "| `retry.max_tries` |"), "utf-8")
    assert gen.main(["--check", "--doc", str(doc)]) == 1
    assert gen.main(["--doc", str(doc)]) == 0
    assert doc.read_text("utf-8") == text
    assert gen.main(["--check", "--doc", str(doc)]) == 0


def test_check_mode_fails_when_the_schema_changes(tmp_path: Path) -> None:
    schema = gen.load_schema()
    schema["$defs"]["retry"]["properties"]["max_attempts"]["description"] = "Changed. Default: `2`."
    changed = tmp_path / "schema.json"
    changed.write_text(json.dumps(schema), "utf-8")
    assert gen.main(["--check", "--schema", str(changed)]) == 1


def _schema_paths(node: dict[str, Any], schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Every property path, walked independently of the generator."""
    if "$ref" in node:
        node = {**schema["$defs"][node["$ref"].split("/")[-1]], **node}
    for key, child in (node.get("properties") or {}).items():
        p = f"{path}.{key}".lstrip(".")
        yield p
        yield from _schema_paths(child, schema, p)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _schema_paths(extra, schema, f"{path}.*")
    items = node.get("items")
    if isinstance(items, dict):
        yield from _schema_paths(items, schema, f"{path}[]")


def test_every_schema_property_is_in_the_reference_with_a_description() -> None:
    schema = gen.load_schema()
    rows = {r.path: r for r in gen.rows(schema)}
    paths = set(_schema_paths(schema, schema))
    assert len(paths) > 80
    assert {
        "providers.*.limits.rpm",
        "routes[].require.score",
        "models.*.scores",
        "quotas[].limit.cost_usd",
        "cache.path",
        "metrics.tenant_label",
        "signals.*.classify",
    } <= paths
    assert paths - set(rows) == set()
    section = _section(DOC.read_text("utf-8"), gen.START, gen.END)
    for path in paths:
        assert rows[path].description, f"schema property {path} has no description"
        assert f"| `{path}` |" in section


def test_descriptions_state_defaults_in_one_form() -> None:
    """`default` written any other way would slip past the generator's Default column."""
    for r in gen.rows(gen.load_schema()):
        assert not re.search(r"\bdefaults? to\b|\(default[:\s]", r.description, re.IGNORECASE), r.path


# -- documented defaults are the engine's defaults ------------------------------------------------

_BARE = """
version: 1
providers: {p: {adapter: simulated}}
models: {m: {provider: p, price: {input: 1, output: 2}, context_window: 1000}}
routes: [{name: r}]
"""
_ONE_OF_EACH = (
    _BARE
    + """
quotas: [{name: q, window: day, limit: {requests: 1}}]
groups: {g: {models: [m]}}
"""
)


def _engine_default(path: str, bare: Any, full: Any) -> Any:
    if path.startswith("providers.*.") and path.split(".")[2] in ("latency_ms", "failure_rate", "seed", "time_scale"):
        # simulated options are the adapter's own defaults: the policy passes only what it sets
        from adapters.simulated import SimulatedAdapter

        value = inspect.signature(SimulatedAdapter.__init__).parameters[path.split(".")[2]].default
        return {"p50": value[0], "p95": value[1]} if path.endswith("latency_ms") else value
    if path == "metrics.tenant_label":
        return bare.metrics_tenant_label
    obj = full if ("*" in path or "[]" in path) else bare
    for part in re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\*|\[\]", path):
        if part == "*":
            obj = next(iter(obj.values()))
        elif part == "[]":
            obj = obj[0]
        else:
            obj = getattr(obj, part)
    return obj


def _comparable(actual: Any, expected: Any) -> Any:
    if isinstance(actual, (set, frozenset)):
        return sorted(actual)
    if isinstance(expected, dict) and isinstance(actual, tuple):
        return dict(actual)  # scores are kept as (query type, score) pairs
    if isinstance(actual, tuple):
        return list(actual)
    if dataclasses.is_dataclass(actual):
        return dataclasses.asdict(actual)  # type: ignore[arg-type]
    return actual


def test_documented_defaults_are_what_the_engine_builds() -> None:
    bare = analyze_text(_BARE).policy
    full = analyze_text(_ONE_OF_EACH).policy
    assert bare is not None and full is not None
    checked = 0
    for r in gen.rows(gen.load_schema()):
        m = re.fullmatch(r"`([^`]*)`", r.default)
        if m is None:
            continue
        expected = yaml.safe_load(m.group(1))
        actual = _comparable(_engine_default(r.path, bare, full), expected)
        assert actual == expected, f"{r.path}: documented default {expected!r}, engine builds {actual!r}"
        checked += 1
    assert checked >= 25


# -- diagnostic codes -------------------------------------------------------------------------------


def _codes_in_source() -> dict[str, set[str]]:
    """code -> severities, from every `diag("code", ...)`, `error("code", ...)` and `code="..."` call."""
    found: dict[str, set[str]] = {}
    for path in POLICY_SOURCES:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            kw = {k.arg: k.value for k in node.keywords}
            code: Any = None
            if name in ("diag", "error") and node.args and isinstance(node.args[0], ast.Constant):
                code = node.args[0].value
            elif isinstance(code_kw := kw.get("code"), ast.Constant):
                code = code_kw.value
            if not isinstance(code, str):
                continue
            sev = kw.get("severity")
            severity = sev.value if isinstance(sev, ast.Constant) else "error"
            found.setdefault(code, set()).add(str(severity))
    return found


def _codes_in_doc() -> dict[str, set[str]]:
    table = _section(DOC.read_text("utf-8"), "<!-- diagnostics:start -->", "<!-- diagnostics:end -->")
    out = {}
    for m in re.finditer(r"^\| `([a-z][a-z-]*)` \| ([^|]+) \|", table, re.MULTILINE):
        out[m.group(1)] = set(re.findall(r"\b(error|warning)\b", m.group(2)))
    return out


def test_source_scan_finds_the_diagnostics() -> None:
    found = _codes_in_source()
    # a scan that silently finds nothing would make the next test pass vacuously
    assert len(found) >= 25
    assert {"schema", "yaml-syntax", "too-large", "expr", "unknown-model", "env-missing"} <= set(found)
    # the same pattern a grep would use agrees with the AST scan
    pattern = re.compile(r'(?:diag|error)\(\s*"([a-z][a-z-]*)"|code="([a-z][a-z-]*)"')
    grepped = {a or b for path in POLICY_SOURCES for a, b in pattern.findall(path.read_text("utf-8"))}
    assert grepped == set(found)


def test_every_diagnostic_code_is_documented_with_its_severity() -> None:
    source, doc = _codes_in_source(), _codes_in_doc()
    missing = sorted(set(source) - set(doc))
    assert not missing, f"diagnostic codes missing from the table in docs/policy.md: {missing}"
    stale = sorted(set(doc) - set(source))
    assert not stale, f"docs/policy.md documents codes the engine never emits: {stale}"
    for code, severities in source.items():
        assert doc[code] == severities, f"{code}: docs say {sorted(doc[code])}, code uses {sorted(severities)}"


# -- examples in the text --------------------------------------------------------------------------


def test_complete_policies_in_the_doc_validate_strictly() -> None:
    blocks = re.findall(r"^```yaml\n(.*?)^```$", DOC.read_text("utf-8"), re.DOTALL | re.MULTILINE)
    policies = [b for b in blocks if b.startswith("version: 1")]
    assert policies
    for text in policies:
        a = analyze_text(text, "<docs/policy.md>", env={"OPENAI_API_KEY": "sk-test"})
        assert not a.diagnostics, [d.format() for d in a.diagnostics]


def test_validate_example_output_matches_the_engine(tmp_path: Path) -> None:
    """The `engine validate bad.yaml` transcript is what the engine prints for that policy."""
    text = DOC.read_text("utf-8")
    shown = re.search(r"\$ engine validate bad\.yaml\n(.*?)\nbad\.yaml: \d+ error", text, re.DOTALL)
    assert shown is not None
    bad = """\
version: 1
providers:
  openai: {adapter: openai, api_key: "${OPENAI_API_KEY:-sk-test}"}
models:
  gpt-4o-mini:
    provider: openai
    price: {input: 0.15, output: 0.60}
    context_window: 128000
    scores: {chat: 4, code: 3}
signals:
  has_code: {regex: ['```']}
query_types:
  - {type: code, when: "signals.has_cod"}
  - {type: chat}
routes:
  - name: code
    when: "query_type == 'cdoe'"
    candidates: [gpt-4o-mni]
  - name: default
    strategy: cheapest
  - name: never
    when: "promt_tokens > 1000"
"""
    a = analyze_text(bad, "bad.yaml", env={})
    assert [d.format() for d in a.diagnostics] == shown.group(1).splitlines()


# -- the production example -------------------------------------------------------------------------


def test_production_example_validates_strictly() -> None:
    a = analyze_policy(PRODUCTION, env=PRODUCTION_ENV)
    assert a.policy is not None
    assert not a.diagnostics, [d.format() for d in a.diagnostics]
    adapters = {p.adapter for p in a.policy.providers.values()}
    assert adapters == {"anthropic", "openai", "gemini", "openai_compatible"}
    assert a.policy.providers["mistral"].base_url == "https://api.mistral.ai/v1"


def test_production_example_needs_its_keys_except_in_a_dry_run() -> None:
    a = analyze_policy(PRODUCTION, env={})
    assert {d.code for d in a.errors} == {"env-missing"}
    assert len(a.errors) == 4
    dry = analyze_policy(PRODUCTION, env={}, dry_run=True)
    assert not dry.errors
    assert [d.code for d in dry.warnings] == ["env-missing"] * 4


def test_production_policy_cases_pass() -> None:
    from engine.policy.testing import load_test_file, run_case

    tf = load_test_file(PRODUCTION_TESTS)
    assert tf.policy == PRODUCTION.resolve()
    # `engine test` is a dry run: the cases must pass without any API key set
    a = analyze_policy(PRODUCTION, env={}, dry_run=True)
    assert a.policy is not None and not a.errors
    compiled = compile_policy(a.policy)
    results = [run_case(compiled, case) for case in tf.cases]
    failed = [(r.case.name, r.outcome, r.error, r.mismatches) for r in results if r.outcome != "PASS"]
    assert not failed
    assert 8 <= len(results) <= 15


def test_the_test_file_example_in_the_doc_passes(tmp_path: Path) -> None:
    blocks = re.findall(r"^```yaml\n(.*?)^```$", DOC.read_text("utf-8"), re.DOTALL | re.MULTILINE)
    example = next(b for b in blocks if b.startswith("policy: ../production.example.yaml"))
    from engine.policy.testing import load_test_file, run_case

    (tmp_path / "tests").mkdir()
    shutil.copy(PRODUCTION, tmp_path / PRODUCTION.name)
    path = tmp_path / "tests" / "example.yaml"
    path.write_text(example, "utf-8")
    tf = load_test_file(path)
    assert tf.policy is not None
    a = analyze_policy(tf.policy, env={}, dry_run=True)
    assert a.policy is not None
    compiled = compile_policy(a.policy)
    outcomes = [(c.name, run_case(compiled, c).outcome) for c in tf.cases]
    assert outcomes == [(c.name, "PASS") for c in tf.cases]
    assert len(outcomes) == 3


def test_explain_example_output_matches_the_engine() -> None:
    from click.testing import CliRunner

    from engine.cli.app import cli

    text = DOC.read_text("utf-8")
    m = re.search(
        r"^\$ engine explain -p policies/production\.example\.yaml (.*?)\n(.*?)\n```$", text, re.DOTALL | re.MULTILINE
    )
    assert m is not None
    assert m.group(1) == "-m tier=premium -m tenant=acme --max-tokens 800 $'Fix this:\\n```py\\ndef f(:\\n```'"
    args = [
        "explain",
        "-p",
        str(PRODUCTION),
        "-m",
        "tier=premium",
        "-m",
        "tenant=acme",
        "--max-tokens",
        "800",
        "Fix this:\n```py\ndef f(:\n```",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output.rstrip("\n") == m.group(2)
