"""Policy expressions: parsed and checked once at load time, evaluated with simpleeval.

The language is a small subset of Python expressions (docs/policy.md, "Expressions"):
comparisons, and/or/not, `in`, arithmetic, literals, the functions `len`/`min`/`max` and the
string functions `lower`/`upper`/`startswith`/`endswith`/`contains`, and the documented request
features. Parsing reports every problem of an expression at once, not only the first.
`meta.tier`, `meta['x-y']` and `signals.has_code` are rewritten at parse time into flat
names (`"meta.tier"`), so evaluation is a dict lookup and no attribute access is ever
performed on a Python object.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simpleeval import EvalWithCompoundTypes

MAX_EXPR_CHARS = 500
MAX_EXPR_NODES = 120

REQUEST_NAMES = frozenset({
    "prompt_tokens", "max_tokens", "temperature", "stream", "has_tools", "has_images", "has_system",
})
"""Features every expression may use (plus `query_type`, `signals.*`, `meta.*` where allowed)."""

BOOL_NAMES = frozenset({"stream", "has_tools", "has_images", "has_system"})


def _lower(x: Any) -> Any:
    return x.lower() if isinstance(x, str) else None


def _upper(x: Any) -> Any:
    return x.upper() if isinstance(x, str) else None


def _startswith(x: Any, prefix: Any) -> bool:
    return isinstance(x, str) and isinstance(prefix, str) and x.startswith(prefix)


def _endswith(x: Any, suffix: Any) -> bool:
    return isinstance(x, str) and isinstance(suffix, str) and x.endswith(suffix)


def _contains(x: Any, part: Any) -> bool:
    return isinstance(x, str) and isinstance(part, str) and part in x


# The string functions never raise: a missing `meta.*` (None) or a number gives None or False,
# so `lower(meta.region) == 'eu'` is simply false for a request without a region.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "min": min, "max": max, "lower": _lower, "upper": _upper, "startswith": _startswith,
    "endswith": _endswith, "contains": _contains,
}
_ARITY: dict[str, tuple[int, int]] = {"len": (1, 1), "min": (1, 50), "max": (1, 50), "lower": (1, 1), "upper": (1, 1),
                                      "startswith": (2, 2), "endswith": (2, 2), "contains": (2, 2)}

_CMP_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)
_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_UNARY_OPS = (ast.Not, ast.USub, ast.UAdd)


class ExprError(ValueError):
    """An expression is not allowed; the message names the first problem, `problems` all of them."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which names an expression may use, depending on where it appears."""

    signals: frozenset[str] = frozenset()
    query_type: bool = True
    meta: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class Expr:
    """A parsed, checked expression.

    Attributes:
        text: the source as written in the policy.
        node: the rewritten AST (flat names for `meta.*`/`signals.*`).
        names: flat names it reads, e.g. {"query_type", "meta.tier"}.
    """

    text: str
    node: ast.expr
    names: frozenset[str] = field(default_factory=frozenset)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Value of the expression for `env` (flat names; a missing `meta.*` reads as None)."""
        return _evaluate(self.node, self.text, env)


class _Env(dict[str, Any]):
    """Names for simpleeval; unknown `meta.*` keys read as None, as POLICY.md says."""

    def __missing__(self, key: str) -> Any:
        if key.startswith("meta."):
            return None
        raise KeyError(key)


_local = threading.local()


def _evaluator() -> EvalWithCompoundTypes:
    # simpleeval keeps per-call state on the instance; one per thread keeps decide() safe to
    # call from several threads without paying the construction cost on every call.
    ev = getattr(_local, "ev", None)
    if ev is None:
        ev = EvalWithCompoundTypes(functions=dict(FUNCTIONS), names={})
        _local.ev = ev
    return ev


def _evaluate(node: ast.expr, text: str, env: Mapping[str, Any]) -> Any:
    ev = _evaluator()
    ev.names = env if isinstance(env, _Env) else _Env(env)
    return ev.eval(text, previously_parsed=node)


def make_env(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Wrap flat feature values for repeated evaluation."""
    return _Env(values)


def parse_expr(text: str, scope: Scope) -> Expr:
    """Parse and check `text`.

    Raises:
        ExprError: naming the first problem; its `problems` lists every one.
    """
    expr, problems = parse_expr_lenient(text, scope)
    if problems:
        raise ExprError(problems[0], problems)
    assert expr is not None
    return expr


def parse_expr_lenient(text: str, scope: Scope) -> tuple[Expr | None, list[str]]:
    """Parse `text` and collect every problem; the Expr (None on a syntax or size error) is for
    further static analysis only, never for evaluation when problems were found."""
    try:
        return _parse(text, scope)
    except ExprError as e:
        return None, e.problems


def _parse(text: str, scope: Scope) -> tuple[Expr, list[str]]:
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression is {len(text)} characters; the limit is {MAX_EXPR_CHARS}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExprError(f"syntax error in expression: {e.msg} (column {e.offset})") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_EXPR_NODES:
        raise ExprError(f"expression has {count} nodes; the limit is {MAX_EXPR_NODES}")
    names: set[str] = set()
    rewriter = _Rewriter(scope, names)
    node = rewriter.visit(tree.body)
    ast.fix_missing_locations(node)
    return Expr(text=text, node=node, names=frozenset(names)), rewriter.problems


class _Rewriter(ast.NodeTransformer):
    """Checks every node against the whitelist and flattens `meta.x` / `signals.x`."""

    def __init__(self, scope: Scope, names: set[str]) -> None:
        self.scope = scope
        self.names = names
        self.problems: list[str] = []

    def visit(self, node: ast.AST) -> Any:
        # each node's problem is recorded and the walk goes on, so one run finds them all
        try:
            return super().visit(node)
        except ExprError as e:
            self.problems.append(str(e))
            return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        raise ExprError(f"{type(node).__name__} is not allowed in policy expressions")

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        node.values = [self.visit(v) for v in node.values]
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if not isinstance(node.op, _UNARY_OPS):
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        node.operand = self.visit(node.operand)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        if not isinstance(node.op, _BIN_OPS):
            raise ExprError(f"operator {type(node.op).__name__} is not allowed (use + - * / // %)")
        node.left, node.right = self.visit(node.left), self.visit(node.right)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        for op in node.ops:
            if not isinstance(op, _CMP_OPS):
                raise ExprError(f"comparison {type(op).__name__} is not allowed (use == != < <= > >= in, not in)")
        node.left = self.visit(node.left)
        node.comparators = [self.visit(c) for c in node.comparators]
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        node.test, node.body, node.orelse = self.visit(node.test), self.visit(node.body), self.visit(node.orelse)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if not isinstance(node.value, (str, int, float, bool, type(None))):
            raise ExprError(f"literal {node.value!r} is not allowed")
        return node

    def visit_List(self, node: ast.List) -> ast.AST:
        node.elts = [self.visit(e) for e in node.elts]
        return node

    visit_Tuple = visit_List  # type: ignore[assignment]
    visit_Set = visit_List  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node.args = [self.visit(a) for a in node.args]  # problems inside the arguments count too
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            shown = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExprError(f"call to {shown!r} is not allowed; the functions are {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ExprError("keyword arguments are not allowed")
        lo, hi = _ARITY[node.func.id]
        if not lo <= len(node.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} or more"
            raise ExprError(f"{node.func.id}() takes {want} argument(s), got {len(node.args)}")
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = node.id
        _no_dunder(name)
        if name in ("True", "False", "None"):
            return node
        if name == "query_type":
            if not self.scope.query_type:
                raise ExprError("query_type is not known yet here (it is what query_types compute)")
        elif name in ("meta", "signals"):
            raise ExprError(f"use {name}.NAME, not {name} alone")
        elif name not in REQUEST_NAMES:
            raise ExprError(f"unknown name {name!r}", )
        self.names.add(name)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        _no_dunder(node.attr)
        return self._flat(node.value, node.attr, ast.unparse(node))

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        key = node.slice
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            raise ExprError(f"{ast.unparse(node)}: only meta['key'] with a string key is allowed")
        _no_dunder(key.value)
        return self._flat(node.value, key.value, ast.unparse(node))

    def _flat(self, base: ast.expr, attr: str, shown: str) -> ast.AST:
        if not isinstance(base, ast.Name) or base.id not in ("meta", "signals"):
            raise ExprError(f"attribute access {shown!r} is not allowed; only meta.KEY and signals.NAME")
        if base.id == "meta":
            if not self.scope.meta:
                raise ExprError("meta is not available here")
        elif attr not in self.scope.signals:
            raise ExprError(f"unknown signal {attr!r}")
        flat = f"{base.id}.{attr}"
        self.names.add(flat)
        return ast.copy_location(ast.Name(id=flat, ctx=ast.Load()), base)


def _no_dunder(name: str) -> None:
    if name.startswith("_"):
        raise ExprError(f"names starting with '_' ({name!r}) are not allowed")


# -- analysis used by the compiler -------------------------------------------------------


def conjuncts(node: ast.expr) -> list[ast.expr]:
    """Top-level `and` operands (the expression itself when it is not an `and`)."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        out: list[ast.expr] = []
        for v in node.values:
            out.extend(conjuncts(v))
        return out
    return [node]


def _literal(node: ast.expr) -> tuple[bool, Any]:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return True, node.value
    return False, None


def discrete_test(node: ast.expr, discrete: Callable[[str], bool]) -> tuple[str, frozenset[Any]] | None:
    """`(name, allowed values)` when `node` is `name == lit`, `lit == name`, `name in [lits]`,
    a bare boolean `name` or `not name`, with `name` discrete; otherwise None.

    Values are compared with `==` semantics, which is what a dict lookup on them gives.
    """
    if isinstance(node, ast.Name) and discrete(node.id) and _is_bool_name(node.id):
        return node.id, frozenset({True})
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not) and isinstance(node.operand, ast.Name)
            and discrete(node.operand.id) and _is_bool_name(node.operand.id)):
        return node.operand.id, frozenset({False})
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return None
    op, left, right = node.ops[0], node.left, node.comparators[0]
    if isinstance(op, ast.Eq):
        for a, b in ((left, right), (right, left)):
            ok, value = _literal(b)
            if ok and isinstance(a, ast.Name) and discrete(a.id) and _hashable(value):
                return a.id, frozenset({value})
    if isinstance(op, ast.In) and isinstance(left, ast.Name) and discrete(left.id):
        if isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            values = []
            for e in right.elts:
                ok, value = _literal(e)
                if not ok:
                    return None
                values.append(value)
            return left.id, frozenset(values)
    return None


def _is_bool_name(name: str) -> bool:
    # signals are booleans by construction; bare `meta.x` is truthiness, not equality
    return name in BOOL_NAMES or name.startswith("signals.")


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def string_literals_compared(node: ast.expr, name: str) -> Iterable[tuple[str, ast.AST]]:
    """Each string literal `name` is compared with (==, !=, in), for "did you mean" checks."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Compare) and len(sub.ops) == 1:
            left, right = sub.left, sub.comparators[0]
            sides = ((left, right), (right, left)) if isinstance(sub.ops[0], (ast.Eq, ast.NotEq)) else (
                ((left, right),) if isinstance(sub.ops[0], (ast.In, ast.NotIn)) else ())
            for a, b in sides:
                if isinstance(a, ast.Name) and a.id == name:
                    elts = b.elts if isinstance(b, (ast.List, ast.Tuple, ast.Set)) else [b]
                    for e in elts:
                        if isinstance(e, ast.Constant) and isinstance(e.value, str):
                            yield e.value, e
