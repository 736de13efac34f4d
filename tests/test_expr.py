"""Policy expressions: only documented names, no escape hatches, parsed once."""

from __future__ import annotations

import pytest

from engine.policy.expr import ExprError, Scope, make_env, parse_expr

SCOPE = Scope(signals=frozenset({"has_code"}))


@pytest.mark.parametrize("text", [
    "query_type == 'code' and meta.tier == 'premium'",
    "prompt_tokens + max_tokens > 100000",
    "not signals.has_code or stream",
    "meta['x-team'] in ['a', 'b']",
    "len(meta.tags) > 2 and max(prompt_tokens, 10) < 5000",
    "temperature == 0 and has_system and not has_tools and not has_images",
    "meta.n % 2 == 0 if meta.n else False",
])
def test_allowed(text: str) -> None:
    parse_expr(text, SCOPE)


@pytest.mark.parametrize(("text", "fragment"), [
    ("().__class__", "'_'"),
    ("meta.__class__.__bases__", "'_'"),
    ("__import__('os')", "not allowed"),
    ("open('/etc/passwd')", "call to 'open' is not allowed"),
    ("promt_tokens > 3", "unknown name 'promt_tokens'"),
    ("signals.nope", "unknown signal 'nope'"),
    ("meta", "use meta.NAME"),
    ("x.y", "attribute access"),
    ("[c for c in 'abc']", "ListComp"),
    ("lambda: 1", "Lambda"),
    ("2 ** 1000000", "Pow"),
    ("meta.a[0]", "only meta['key']"),
    ("f'{meta.a}'", "JoinedStr"),
    ("a := 1", "syntax error"),
    ("1 +" * 200 + "1", "limit"),
])
def test_refused(text: str, fragment: str) -> None:
    with pytest.raises(ExprError, match=None) as e:
        parse_expr(text, SCOPE)
    assert fragment in str(e.value)


def test_query_type_is_not_available_while_classifying() -> None:
    with pytest.raises(ExprError, match="query_type is not known yet"):
        parse_expr("query_type == 'code'", Scope(query_type=False))


def test_evaluation_missing_meta_is_none() -> None:
    e = parse_expr("meta.tier == None and meta['x-y'] == 3", SCOPE)
    assert e.evaluate(make_env({"meta.x-y": 3})) is True
    assert e.names == {"meta.tier", "meta.x-y"}


@pytest.mark.parametrize(("text", "env", "want"), [
    ("lower(meta.region) == 'eu'", {"meta.region": "EU"}, True),
    ("lower(meta.region) == 'eu'", {}, False),  # a missing key is None: no trap, just false
    ("upper(meta.team) == 'OPS'", {"meta.team": "ops"}, True),
    ("startswith(meta.key, 'sk-test-')", {"meta.key": "sk-test-1"}, True),
    ("startswith(meta.key, 'sk-test-')", {"meta.key": 42}, False),
    ("endswith(meta.user, '@example.com')", {"meta.user": "a@example.com"}, True),
    ("contains(lower(meta.plan), 'enterprise')", {"meta.plan": "EU-Enterprise"}, True),
    ("contains(meta.plan, 'x')", {}, False),
])
def test_string_functions_never_raise(text: str, env: dict[str, object], want: bool) -> None:
    assert parse_expr(text, SCOPE).evaluate(make_env(env)) is want


@pytest.mark.parametrize(("text", "fragment"), [
    ("lower()", "lower() takes 1 argument(s), got 0"),
    ("startswith(meta.key)", "startswith() takes 2 argument(s), got 1"),
    ("contains(meta.a, 'b', 'c')", "contains() takes 2 argument(s), got 3"),
])
def test_string_function_arity(text: str, fragment: str) -> None:
    with pytest.raises(ExprError) as e:
        parse_expr(text, SCOPE)
    assert fragment in str(e.value)


def test_every_problem_of_an_expression_is_reported() -> None:
    with pytest.raises(ExprError) as e:
        parse_expr("promt_tokens > 3 and signals.nope and foo(1) and meta.__x", SCOPE)
    assert e.value.problems == [
        "unknown name 'promt_tokens'",
        "unknown signal 'nope'",
        "call to 'foo' is not allowed; the functions are len, min, max, lower, upper, startswith, endswith, contains",
        "names starting with '_' ('__x') are not allowed",
    ]
