"""The CLI as a user runs it: exit codes and output (STYLE.md rule 32)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.app import cli

HERE = Path(__file__).parent
MINIMAL = HERE / "policies" / "minimal.yaml"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
    return r.exit_code, r.output


def test_explain_json_has_the_contract_fields() -> None:
    code, out = run("explain", "--policy", str(MINIMAL), "--json", "--meta", "tier=pro", "--max-tokens", "200",
                    "hello there")
    assert code == 0
    d = json.loads(out)
    assert {"route", "query_type", "model", "plan", "candidates", "features", "trace"} <= set(d)
    assert (d["route"], d["model"], d["plan"]) == ("default", "small", ["small", "big"])
    assert d["features"]["meta"] == {"tier": "pro"} and d["features"]["max_tokens"] == 200
    assert all({"model", "eligible", "score", "est_cost_usd"} <= set(c) for c in d["candidates"])


def test_explain_reads_stdin_and_refusal_exits_3(tmp_path: Path) -> None:
    code, out = run("explain", "--policy", str(MINIMAL), "-", input="word " * 200_000)
    assert code == 3 and "REFUSED" in out and "context window" in out


def test_explain_exit_codes_for_bad_policy_and_bad_usage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\n")
    code, _ = run("explain", "--policy", str(bad), "hi")
    assert code == 1
    code, _ = run("explain", "--policy", str(MINIMAL), "--meta", "novalue", "hi")
    assert code == 2
    code, _ = run("explain", "--policy", str(MINIMAL), "--max-tokens", "0", "hi")
    assert code == 2


def test_policy_from_env_var(tmp_path: Path) -> None:
    code, out = run("explain", "--json", "hello", env={"ENGINE_POLICY": str(MINIMAL)})
    assert code == 0 and json.loads(out)["plan"] == ["small", "big"]


def test_engine_test_pass_and_readable_failure_diff(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(f"""policy: {MINIMAL}
cases:
  - name: greeting is cheap
    request: {{prompt: hello}}
    expect: {{route: default, model: small}}
  - name: wrong on purpose
    request: {{prompt: "```py\\ndef f(): pass\\n```"}}
    expect: {{route: code, model: small, plan: [small]}}
  - name: an open circuit moves the plan
    request: {{prompt: hello}}
    state: {{open_circuits: [small]}}
    expect: {{plan: [big]}}
""")
    code, out = run("test", str(cases))
    assert code == 1
    assert "FAIL  " in out and "wrong on purpose" in out
    assert '- expected: "small"' not in out  # strings are shown with repr
    assert "    - expected: 'small'\n    + actual:   'big'" in out
    assert "    - expected: [\"small\"]\n    + actual:   [\"big\", \"small\"]" in out
    assert "PASS: 2/3" in out


def test_engine_test_malformed_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text("cases: [{request: {prompt: hi}}]\n")
    code, out = run("test", "--policy", str(MINIMAL), str(f))
    assert code == 1 and "needs `request` and `expect`" in out


@pytest.mark.parametrize("name", ["default.yaml", "production.yaml", "platform.yaml"])
def test_bundled_policy_test_suites_pass(name: str) -> None:
    suite = HERE.parent / "policies" / "tests" / name
    if not suite.exists():
        pytest.skip(f"{suite} not written")
    code, out = run("test", str(suite))
    assert code == 0, out


def test_validate_many_files_and_json_format(tmp_path: Path) -> None:
    code, out = run("validate", "--format", "json", str(MINIMAL), str(HERE / "policies" / "broken.yaml"))
    assert code == 1
    report = json.loads(out)
    assert [r["ok"] for r in report] == [True, False]
    assert any(d["code"] == "unknown-model" for d in report[1]["diagnostics"])


def test_explain_describes_tools_images_and_schema_requests(tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]))
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    default = HERE.parent / "policies" / "default.yaml"
    code, out = run("explain", "-p", str(default), "--json", "--tools", str(tools), "--max-tokens", "300",
                    "Write a short poem about the sea at night.")
    d = json.loads(out)
    assert code == 0 and d["features"]["needs"] == ["tools"] and d["model"] == "claude-haiku"
    reasons = {c["model"]: c.get("reason") for c in d["candidates"] if c["role"] == "candidate"}
    assert reasons["mixtral"] == "lacks tools"
    code, out = run("explain", "-p", str(default), "--json", "--image", "--json-schema", str(schema), "--tools", "2",
                    "Write a short poem about the sea at night.")
    d = json.loads(out)
    assert d["features"]["needs"] == ["json", "json_schema", "tools", "vision"]
    code, out = run("explain", "-p", str(default), "--tools", "1", "Write a short poem about the sea at night.")
    assert "mixtral        score 4  est $0.000715  lacks tools" in out and "needs       tools" in out


def test_explain_answers_why_with_routes_classifier_cache_quotas_and_limits() -> None:
    default = HERE.parent / "policies" / "default.yaml"
    code, out = run("explain", "-p", str(default), "--json", "-m", "tenant=acme", "--temperature", "0",
                    "--quota-used", "tenant-daily-spend.cost_usd=4.5", "Hi there! How are you today?")
    d = json.loads(out)
    assert code == 0 and d["route"] == "default"
    first = d["routes_not_matched"][0]
    assert first == {"route": "long-context", "when": "signals.long_input", "false": "signals.long_input",
                     "values": {"signals.long_input": False}}
    assert d["routes_not_matched"][1]["values"] == {"query_type": "chat"}
    assert d["classifier"]["label"] == "chat" and d["classifier"]["evidence"][0][0] == "chat"
    assert d["cache"]["eligible"] is True
    spend = next(q for q in d["quotas"] if q["name"] == "tenant-daily-spend")
    assert spend["headroom"] == {"cost_usd": 0.5} and spend["verdict"] == "has room for this request"
    assert d["limits"][0] == {"model": "gpt-4o-mini", "provider": "sim-openai",
                              "provider_limits": {"rpm": 5000, "concurrency": 64}}
    code, out = run("explain", "-p", str(default), "--prompt-tokens", "150000", "--stream")
    assert code == 0 and "route       long-context" in out and "cache       not used: streaming" in out


def test_explain_usage_errors() -> None:
    code, out = run("explain", "--policy", str(MINIMAL), "--json", "--mermaid", "hi")
    assert code == 2 and "--json and --mermaid" in out
    code, out = run("explain", "--policy", str(MINIMAL), "--quota-used", "nodot=1", "hi")
    assert code == 2 and "QUOTA.MEASURE=AMOUNT" in out
    code, out = run("explain", "--policy", str(MINIMAL), "--quota-used", "q.cost_usd=1", "hi")
    assert code == 2 and "unknown quota 'q'" in out


def test_engine_test_malformed_case_is_its_own_error_and_the_rest_run(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(f"""policy: {MINIMAL}
cases:
  - name: fine
    request: {{prompt: hello}}
    expect: {{model: small}}
  - name: typo in a key
    request: {{prompt: hello, max_token: 5}}
    expect: {{model: small}}
  - name: bad state value
    request: {{prompt: hello}}
    state: {{quota_used: {{nope: {{tokens: 1}}}}}}
    expect: {{model: small}}
  - name: stated size
    request: {{prompt_tokens: 9000, max_tokens: 100}}
    expect: {{model: big, features: {{prompt_tokens: 9000}}}}
""")
    r = CliRunner().invoke(cli, ["test", str(cases)], catch_exceptions=False)
    assert r.exit_code == 1
    out = r.output  # one stream: results, failures, then the summary last
    assert f"ERROR {cases}: typo in a key" in out
    assert f"{cases}:6: cases[1]: request: unknown key(s) max_token" in out
    assert "unknown quota 'nope'" in out
    assert out.rstrip().splitlines()[-2:] == ["PASS: 2/4", "FAIL: 2/4"]


def test_engine_test_coverage_and_threshold(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(f"""policy: {MINIMAL}
cases:
  - name: greeting is cheap
    request: {{prompt: hello}}
    expect: {{route: default}}
""")
    code, out = run("test", "--coverage", str(cases))
    assert code == 0
    assert "routes 50%" in out and "not exercised: route code" in out and "not exercised: fallback code: small" in out
    code, out = run("test", "--coverage", "--threshold", "90", str(cases))
    assert code == 1 and "below the threshold 90%" in out
    code, out = run("test", "--threshold", "90", str(cases))
    assert code == 2
    worked = HERE.parent / "policies" / "tests" / "platform.yaml"
    code, out = run("test", "--coverage", "--threshold", "100", str(worked))
    assert code == 0, out
    assert "100.0% (routes 100%" in out


def test_a_serving_process_tunes_gc_and_the_switch_interval_but_keeps_stricter_settings() -> None:
    import gc

    from engine.cli import serve

    saved_gc, saved_si = gc.get_threshold(), sys.getswitchinterval()
    try:
        gc.set_threshold(700, 10, 10)
        sys.setswitchinterval(0.005)
        serve._tune_interpreter()
        assert gc.get_threshold()[0] == serve._GC_YOUNG_THRESHOLD
        assert sys.getswitchinterval() == pytest.approx(serve._SWITCH_INTERVAL_S)
        gc.set_threshold(50_000, 10, 10)
        sys.setswitchinterval(0.0005)
        serve._tune_interpreter()
        assert gc.get_threshold()[0] == 50_000 and sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        gc.set_threshold(*saved_gc)
        sys.setswitchinterval(saved_si)
