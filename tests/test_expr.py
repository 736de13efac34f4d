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
