"""Policy expressions compiled to plain Python functions, for conditions checked on every request.

`parse_expr` checks an expression once; `Expr.evaluate` then walks it with simpleeval, which
costs several microseconds a call. A `Predicate` is the same checked expression turned into a
Python code object at load time, reading the request's `Features` directly: `temperature == 0`
becomes `lambda f: f.temperature == 0`, `meta.tier` becomes `f.meta.get("tier")`. It is still
an `Expr` (text, node, names, `evaluate`), so explain, replay and diagrams keep working on it.

Only nodes `parse_expr` allowed reach here (no attribute access, no calls but len/min/max, no
`**`), so the generated code can do nothing the expression language cannot. The one guard
simpleeval adds that plain Python lacks is a bound on `*` building huge strings or lists from
request values (`meta.x * 100000000`); `_mul` keeps that bound.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.policy.expr import FUNCTIONS, REQUEST_NAMES, Expr

if TYPE_CHECKING:
    from engine.routing.features import Features

__all__ = ["Predicate", "compile_predicate"]

MAX_SEQUENCE = 100_000
"""Longest string or list `*` may build (simpleeval's MAX_STRING_LENGTH)."""

_FEATURE_NAMES = REQUEST_NAMES | {"query_type"}


def _mul(a: Any, b: Any) -> Any:
    if isinstance(a, (str, list, tuple)) or isinstance(b, (str, list, tuple)):
        seq, n = (a, b) if isinstance(a, (str, list, tuple)) else (b, a)
        if isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
            raise ValueError(f"sequence longer than {MAX_SEQUENCE} in a policy expression")
    return a * b


@dataclass(frozen=True, slots=True, eq=False)
class Predicate(Expr):
    """A checked expression with a compiled Python form over `Features`.

    Attributes:
        fn: the compiled function; `holds` wraps it so that an evaluation error is False.
    """

    fn: Callable[[Features], Any] = field(default=lambda f: True, repr=False)

    def holds(self, features: Features) -> bool:
        """Truth of the expression for these features; an error (`None > 3`) counts as false,
        as everywhere else in the policy language."""
        try:
            return bool(self.fn(features))
        except Exception:
            return False


class _ToPython(ast.NodeTransformer):
    """Rewrites the flat names of a checked expression into reads of the features object `_f`."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = node.id
        f = ast.Name(id="_f", ctx=ast.Load())
        if name in ("True", "False", "None"):
            return ast.copy_location(ast.Constant(value={"True": True, "False": False, "None": None}[name]), node)
        if name in _FEATURE_NAMES:
            return ast.copy_location(ast.Attribute(value=f, attr=name, ctx=ast.Load()), node)
        if name.startswith("meta."):
            # a key the request does not carry reads as None (POLICY.md)
            get = ast.Attribute(value=ast.Attribute(value=f, attr="meta", ctx=ast.Load()), attr="get", ctx=ast.Load())
            return ast.copy_location(ast.Call(func=get, args=[ast.Constant(value=name[5:])], keywords=[]), node)
        if name.startswith("signals."):
            sig = ast.Attribute(value=f, attr="signals", ctx=ast.Load())
            return ast.copy_location(ast.Subscript(value=sig, slice=ast.Constant(value=name[8:]), ctx=ast.Load()),
                                     node)
        if name in FUNCTIONS:  # the callee of len(...), min(...), max(...)
            return node
        raise ValueError(f"name {name!r} cannot be compiled")  # parse_expr lets no other name through

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Mult):
            return ast.copy_location(
                ast.Call(func=ast.Name(id="_mul", ctx=ast.Load()), args=[node.left, node.right], keywords=[]), node)
        return node


def compile_predicate(expr: Expr) -> Predicate:
    """`expr` (from `parse_expr`) with a compiled Python form; see the module docstring."""
    import copy

    body = _ToPython().visit(copy.deepcopy(expr.node))
    fn_node = ast.Expression(body=ast.Lambda(
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg="_f")], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=body))
    ast.fix_missing_locations(fn_node)
    code = compile(fn_node, f"<policy expression {expr.text!r}>", "eval")
    namespace: dict[str, Any] = {"__builtins__": {}, "_mul": _mul, **FUNCTIONS}
    # the code was generated above from a checked AST of whitelisted nodes, with no builtins
    fn = eval(code, namespace)
    return Predicate(text=expr.text, node=expr.node, names=expr.names, fn=fn)
