"""`engine validate` on a policy with many different mistakes reports each one, positioned."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from engine.cli.app import cli
from engine.policy.api import analyze_policy, analyze_text

HERE = Path(__file__).parent
BROKEN = HERE / "policies" / "broken.yaml"
MINIMAL = (HERE / "policies" / "minimal.yaml").read_text()


def test_every_mistake_is_reported_with_line_col_and_path() -> None:
    a = analyze_policy(BROKEN, env={})
    got = {(d.code, d.line, d.path) for d in a.errors}
    expected = {
        ("schema", 6, "$.providers.openai.timeout_s"),
        ("schema", 8, "$.providers.sim.adapter"),
        ("unknown-provider", 11, "$.models['gpt-4o'].provider"),
        ("schema", 14, "$.models['gpt-4o'].scores.code"),
        ("unknown-query-type", 14, "$.models['gpt-4o'].scores.coding"),
        ("schema", 17, "$.models.tiny.price"),
        ("schema-unknown-key", 19, "$.models.tiny.colour"),
        ("bad-regex", 21, "$.signals.has_code.regex[0]"),
        ("expr", 23, "$.query_types[0].when"),
        ("expr", 27, "$.routes[0].when"),
        ("unknown-model", 28, "$.routes[0].candidates[1]"),
        ("schema", 29, "$.routes[0].strategy"),
        ("duplicate-route", 30, "$.routes[1].name"),
        ("expr", 31, "$.routes[1].when"),
        ("unknown-model", 33, "$.routes[2].fallback[0]"),
    }
    assert got == expected
    assert all(d.col > 0 and d.file == str(BROKEN) for d in a.errors)


def test_suggestions_for_misspelled_names() -> None:
    msgs = [d.message for d in analyze_policy(BROKEN, env={}).errors]
    for hint in ("did you mean 'simulated'", "did you mean 'openai'", "did you mean 'prompt_tokens'",
                 "did you mean 'has_code'", "did you mean 'code'", "did you mean 'fastest'"):
        assert any(hint in m for m in msgs), hint


def test_cli_output_format_and_exit_code() -> None:
    r = CliRunner().invoke(cli, ["validate", str(BROKEN)], catch_exceptions=False, env={"BROKEN_TEST_UNSET_KEY": ""})
    assert r.exit_code == 1
    line = next(x for x in r.output.splitlines() if "$.routes[1].when" in x)
    assert line == (f"{BROKEN}:31:11: error: names starting with '_' ('__class__') are not allowed "
                    "in '().__class__' (at $.routes[1].when)")
    assert "Traceback" not in r.output


def _warnings(text: str) -> set[str]:
    return {d.code for d in analyze_text(text, "p.yaml", {}).warnings}


def test_warnings_shadowed_route_unused_model_and_cost_ceiling() -> None:
    text = MINIMAL.replace("  - name: default\n    strategy: cheapest\n",
                           "  - name: default\n    strategy: cheapest\n    candidates: [small]\n"
                           "  - name: late\n    when: \"meta.tier == 'x'\"\n"
                           "    max_cost_usd: 0.0000000001\n")
    text = text.replace("    fallback: [small]\n", "")
    assert _warnings(text) >= {"shadowed-route", "cost-ceiling"}


def test_unsatisfiable_route_is_an_error() -> None:
    text = MINIMAL.replace("require: {score: 4}", "require: {score: 4, features: [vision]}").replace(
        "    fallback: [small]\n", "")
    a = analyze_text(text, "p.yaml", {})
    [d] = a.errors
    assert d.code == "unsatisfiable-route" and d.path == "$.routes[0].require"
    assert "lacks vision" in d.message


def test_model_no_route_can_pick_is_a_warning() -> None:
    text = MINIMAL.replace("  - name: default\n    strategy: cheapest\n",
                           "  - name: default\n    strategy: cheapest\n    candidates: [big]\n").replace(
        "    fallback: [small]\n", "")
    a = analyze_text(text, "p.yaml", {})
    assert [(d.code, d.path) for d in a.warnings] == [("unused-model", "$.models.small")]


def test_strict_turns_warnings_into_failure(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text(MINIMAL + "  - name: never\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["validate", str(f)]).exit_code == 0
    r = runner.invoke(cli, ["validate", "--strict", str(f)])
    assert r.exit_code == 1 and "shadowed-route" not in r.output and "can never match" in r.output


def test_query_type_literal_typo_is_caught() -> None:
    text = MINIMAL.replace("when: \"query_type == 'code'\"", "when: \"query_type == 'cdoe'\"")
    [d] = analyze_text(text, "p.yaml", {}).errors
    assert d.code == "unknown-query-type" and "did you mean 'code'" in d.message


def test_bundled_policies_are_valid() -> None:
    from engine.policy.bundled import default_policy_path

    a = analyze_policy(default_policy_path())
    assert not a.errors and not a.warnings, [d.format() for d in a.diagnostics]


def test_in_memory_decision_log_is_refused() -> None:
    [d] = analyze_text(MINIMAL + "log: {sqlite: ':memory:'}\n", "p.yaml", {}).errors
    assert (d.code, d.path) == ("log-memory", "$.log.sqlite")


def test_every_problem_of_one_expression_and_the_literal_behind_a_typo() -> None:
    text = MINIMAL.replace('when: "query_type == \'code\'"',
                           'when: "promt_tokens > 5 and query_type == \'cdoe\' and bad(1)"')
    a = analyze_text(text, "p.yaml", {})
    msgs = sorted(d.message for d in a.errors if d.path == "$.routes[0].when")
    assert len(msgs) == 3
    assert any("unknown name 'promt_tokens'; did you mean 'prompt_tokens'" in m for m in msgs)
    assert any("call to 'bad' is not allowed" in m for m in msgs)
    assert any("query_type is never 'cdoe'; did you mean 'code'" in m for m in msgs)


GROUPED = MINIMAL + """
groups:
  pair:
    models: [small, big]
    strategy: shuffle
    weights: {small: 2}
  big: {models: [smal]}
quotas:
  - {name: tiny, scope: [tenant], window: day, limit: {tokens: 3}}
  - {name: cheap, window: day, limit: {cost_usd: 0.0000001}, on_exceed: downgrade}
"""


def test_groups_downgrade_to_and_quota_floors_are_checked() -> None:
    text = GROUPED.replace("    fallback: [small]", "    fallback: [small]\n    downgrade_to: [pair, nope]")
    a = analyze_text(text, "p.yaml", {})
    got = {(d.code, d.severity, d.path) for d in a.diagnostics}
    assert ("duplicate-name", "error", "$.groups.big") in got
    assert ("unknown-model", "error", "$.groups.big.models[0]") in got
    assert ("unknown-model", "error", "$.routes[0].downgrade_to[1]") in got
    assert ("group-weight", "warning", "$.groups.pair.weights") in got
    assert ("quota-below-minimum", "warning", "$.quotas[0].limit.tokens") in got
    assert ("quota-below-minimum", "warning", "$.quotas[1].limit.cost_usd") in got
    assert any("did you mean 'small'" in d.message for d in a.errors)


def test_a_group_member_of_two_groups_and_a_good_group() -> None:
    text = MINIMAL + "groups:\n  a: {models: [small, big]}\n  b: {models: [big]}\n"
    a = analyze_text(text, "p.yaml", {})
    assert [(d.code, d.path) for d in a.errors] == [("duplicate-name", "$.groups.b.models[0]")]
    ok = analyze_text(MINIMAL.replace("fallback: [small]", "fallback: [pair]") +
                      "groups:\n  pair: {models: [small, big], weights: {small: 3}}\n", "p.yaml", {})
    assert not ok.diagnostics, [d.format() for d in ok.diagnostics]


def test_validate_prints_downgrade_reach_and_dry_run_accepts_missing_keys(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(MINIMAL.replace("sim: {adapter: simulated, latency_ms: {p50: 1, p95: 2}}",
                                 "sim: {adapter: openai, api_key: '${VALIDATE_TEST_UNSET_KEY}'}")
                 + "quotas:\n  - {name: q, scope: [tenant], window: day, limit: {cost_usd: 5}, on_exceed: downgrade}\n")
    env = {"VALIDATE_TEST_UNSET_KEY": None}
    r = CliRunner().invoke(cli, ["validate", "--strict", str(p)], env=env, catch_exceptions=False)  # type: ignore[arg-type]
    assert r.exit_code == 1
    assert "use `engine validate --dry-run`" in r.output and ":-default" not in r.output
    r = CliRunner().invoke(cli, ["validate", "--dry-run", "--strict", str(p)], env=env,  # type: ignore[arg-type]
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "fine for a dry run" in r.output
    assert "downgrade from route 'code' can reach: small, big" in r.output
    assert "downgrade from route 'default' can reach: small, big" in r.output
