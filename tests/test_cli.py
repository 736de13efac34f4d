"""The CLI as a user runs it: exit codes and output (STYLE.md rule 32)."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("name", ["default.yaml", "production.yaml"])
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
