"""Which conditional quotas (`when:`) apply to a request: one rule for the live ledger, replay and
the dry runs of `engine explain` / `engine test`, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from engine.policy.expr import Expr, Scope, parse_expr
from engine.policy.model import Quota

__all__ = ["QuotaConditions"]


class QuotaConditions:
    """The parsed `when` of each conditional quota of a policy."""

    __slots__ = ("_whens",)

    def __init__(self, quotas: Sequence[Quota], signals: Collection[str] = ()) -> None:
        scope = Scope(signals=frozenset(signals))
        self._whens: tuple[tuple[str, Expr], ...] = tuple(
            (q.name, parse_expr(q.when, scope)) for q in quotas if q.when)

    def __bool__(self) -> bool:
        return bool(self._whens)

    def skipped(self, env: Mapping[str, Any]) -> frozenset[str]:
        """The conditional quotas that do not apply to a request with these features (`Features.env()`).

        An expression that fails to evaluate (e.g. `meta.size > 3` without `meta.size`) counts as
        false, as in routes: the quota does not apply.
        """
        if not self._whens:
            return frozenset()
        out = []
        for name, expr in self._whens:
            try:
                holds = bool(expr.evaluate(env))
            except Exception:
                holds = False
            if not holds:
                out.append(name)
        return frozenset(out)
