"""Loading refuses hostile input quickly and reports every problem with its position."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import PolicyError
from engine.policy.api import analyze_policy, analyze_text, load_policy, load_policy_text
from engine.policy.load import MAX_BYTES

HERE = Path(__file__).parent
MINIMAL = (HERE / "policies" / "minimal.yaml").read_text()


def codes(text: str, env: dict[str, str] | None = None) -> list[tuple[str, int, int, str]]:
    a = analyze_text(text, "p.yaml", env or {})
    return [(d.code, d.line, d.col, d.path) for d in a.diagnostics]


def test_minimal_policy_loads() -> None:
    p = load_policy_text(MINIMAL, "minimal.yaml", env={})
    assert list(p.models) == ["small", "big"]
    assert p.routes[0].name == "code"
    assert len(p.digest) == 64


def test_yaml_bomb_is_refused_fast() -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    a = analyze_text(bomb, "bomb.yaml", {})
    assert [d.code for d in a.diagnostics] == ["yaml-too-many-nodes"]
    assert "expansion bomb" in a.diagnostics[0].message


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    a = analyze_policy(big)
    assert [d.code for d in a.diagnostics] == ["too-large"]
    assert f"{MAX_BYTES:,}" in a.diagnostics[0].message


def test_duplicate_and_non_string_keys() -> None:
    text = MINIMAL.replace("models:\n", "models:\n  big:\n    provider: sim\n", 1) + "on: 1\n1: 2\n"
    found = codes(text)
    assert ("yaml-duplicate-key", 12, 3, "$.models.big") in found
    assert any(c == "yaml-key-type" and line == 31 for c, line, _, _ in found)
    assert any(c == "yaml-key-type" and line == 32 for c, line, _, _ in found)


def test_syntax_error_has_a_position() -> None:
    [(code, line, col, _)] = codes("version: 1\nproviders: [a,\n")
    assert code == "yaml-syntax" and line == 3


def test_multiple_documents_and_empty_file() -> None:
    assert codes("") == [("yaml-documents", 1, 1, "$")]
    assert codes("a: 1\n---\nb: 2\n")[0][0] == "yaml-documents"


def test_missing_env_var_names_the_variable_and_the_place() -> None:
    text = MINIMAL.replace("adapter: simulated,", "adapter: simulated, api_key: '${MY_SECRET_KEY}',")
    a = analyze_text(text, "p.yaml", {})
    [d] = a.errors
    assert d.code == "env-missing" and "MY_SECRET_KEY" in d.message
    assert (d.line, d.path) == (3, "$.providers.sim.api_key")


def test_missing_env_var_of_an_unused_provider_is_a_warning() -> None:
    text = MINIMAL.replace("models:", "  spare: {adapter: openai, api_key: '${UNSET_SPARE_KEY}'}\nmodels:", 1)
    a = analyze_text(text, "p.yaml", {})
    assert not a.errors
    assert [d.code for d in a.warnings] == ["env-missing"]
    assert a.policy is not None and a.policy.providers["spare"].api_key == ""


def test_dry_run_tolerates_missing_api_keys() -> None:
    text = MINIMAL.replace("adapter: simulated,", "adapter: simulated, api_key: '${MY_SECRET_KEY}',")
    a = analyze_text(text, "p.yaml", {}, dry_run=True)
    assert not a.errors and [d.code for d in a.warnings] == ["env-missing"]


def test_env_substitution_defaults_and_escapes() -> None:
    text = MINIMAL.replace("adapter: simulated,", "adapter: simulated, base_url: '${HOST:-http://x}/v1', "
                           "api_key: '$${literal}-${KEY}',")
    p = load_policy_text(text, "p.yaml", env={"KEY": "s3cret"})
    assert p.providers["sim"].base_url == "http://x/v1"
    assert p.providers["sim"].api_key == "${literal}-s3cret"


def test_secret_values_never_appear_in_diagnostics_or_repr() -> None:
    text = MINIMAL.replace("adapter: simulated,", "adapter: simulated, api_key: '${KEY}', timeout_s: -1,")
    a = analyze_text(text, "p.yaml", {"KEY": "sk-very-secret-value"})
    assert a.errors
    assert all("sk-very-secret" not in d.format() for d in a.diagnostics)
    p = load_policy_text(MINIMAL.replace("adapter: simulated,", "adapter: simulated, api_key: '${KEY}',"),
                         env={"KEY": "sk-very-secret-value"})
    assert "sk-very-secret" not in repr(p)


def test_load_policy_raises_with_every_diagnostic(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(MINIMAL.replace("strategy: best", "strategy: bestest")
                 .replace("fallback: [small]", "fallback: [smal]"))
    with pytest.raises(PolicyError) as e:
        load_policy(f)
    assert {d.code for d in e.value.diagnostics} >= {"schema", "unknown-model"}
    assert str(f) in e.value.report()


def test_merge_keys_and_anchors_are_supported() -> None:
    text = MINIMAL.replace("  small:\n    provider: sim\n", "  small: &base\n    provider: sim\n").replace(
        "  big:\n    provider: sim\n", "  big:\n    <<: *base\n")
    p = load_policy_text(text, env={})
    assert p.models["big"].provider == "sim"


@pytest.mark.parametrize("value", ["!custom x", '!!python/name:os.system ""', "!!binary aGVsbG8=", "2001-12-14"])
def test_tags_and_implicit_dates_are_refused_without_constructing_anything(value: str) -> None:
    [(code, line, col, path)] = codes(f"a: {value}\n")
    assert (code, line, col, path) == ("yaml-tag", 1, 4, "$.a")


def test_a_lone_unquoted_reference_takes_the_yaml_type_of_its_value() -> None:
    text = MINIMAL.replace("  sim: {adapter: simulated, latency_ms: {p50: 1, p95: 2}}\n",
                           "  sim:\n    adapter: simulated\n    timeout_s: ${T:-30}\n    base_url: \"${T:-30}\"\n")
    assert load_policy_text(text, env={}).providers["sim"].timeout_s == 30
    p = load_policy_text(text, env={"T": "2.5"})
    assert p.providers["sim"].timeout_s == 2.5 and p.providers["sim"].base_url == "2.5"
