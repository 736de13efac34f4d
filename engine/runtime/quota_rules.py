"""The rules of quotas, apart from where they are counted: contexts, counters, scope keys, limits, refusals.

`quotas.QuotaManager` (SQLite) and `backends.redis_quotas.RedisQuotaManager` share all of it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import QuotaExceeded
from engine.policy.model import OnExceed, Quota, QuotaLimit
from engine.runtime.windows import ROLLING_STEPS, step_of

__all__ = ["SCOPE_FIELDS", "QuotaBlock", "QuotaContext", "Usage"]

Measure = Literal["cost_usd", "tokens", "requests"]
SCOPE_FIELDS = ("tenant", "key", "model", "provider")
"""The request fields a quota may be scoped by, in the order they appear in a scope key."""

_UTC = dt.timezone.utc
_COST_DIGITS = 12  # pico-dollars: keeps repeated float additions from drifting past a limit
_COST_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class QuotaContext:
    """Who and what a request attempt is, as far as quotas care."""

    tenant: str | None
    key: str | None
    model: str
    provider: str
    skip: frozenset[str] = frozenset()
    """Conditional quotas whose `when` is false for this request (`QuotaManager.skipped`)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Counters of one bucket."""

    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def plus(self, requests: int, tokens: int, cost_usd: float) -> Usage:
        """These counters moved by the given deltas."""
        return Usage(self.requests + requests, self.tokens + tokens, round(self.cost_usd + cost_usd, _COST_DIGITS))


@dataclass(frozen=True, slots=True)
class QuotaBlock:
    """Why a quota has no room for an estimate."""

    quota: str
    on_exceed: OnExceed
    scope_key: str
    measure: Measure
    limit: float
    used: float
    requested: float
    resets_at: float

    @property
    def reason(self) -> str:
        """One line naming the quota, the measure, used/limit and the reset time."""
        when = dt.datetime.fromtimestamp(self.resets_at, _UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"quota {self.quota!r} ({self.scope_key or 'global'}, on_exceed={self.on_exceed}): {self.measure} "
            f"used {self.used:g} + {self.requested:g} > limit {self.limit:g}; resets at {when}"
        )

    def error(self) -> QuotaExceeded:
        """The exception `reserve` raises for this block."""
        return QuotaExceeded(self.quota, self.scope_key, self.measure, self.limit, self.used, self.resets_at,
                             requested=self.requested)


@dataclass(frozen=True, slots=True)
class _Rule:
    quota: Quota
    fields: tuple[str, ...]  # scope fields in SCOPE_FIELDS order
    limits: tuple[tuple[Measure, float], ...]  # empty: only the `by_provider`/`by_model` entries limit
    by: str | None = None  # "provider" or "model" when the limit is a map over it
    variants: dict[str, _Rule] = field(default_factory=dict, hash=False, compare=False)  # value -> its limits
    step: float = 0.0  # rolling windows: the step's length; calendar windows: 0
    older: int = 0  # rolling windows: the steps before the current one that count too

    def pick(self, ctx: QuotaContext) -> _Rule | None:
        """The rule whose limits apply to `ctx`: its map entry, else the plain limits, else none."""
        if self.by is None:
            return self
        variant = self.variants.get(getattr(ctx, self.by))
        if variant is not None:
            return variant
        return self if self.limits else None

    def limits_for_key(self, scope_key: str) -> _Rule:
        """The rule a stored scope key was counted under (its map entry, else this one)."""
        for part in scope_key.split(","):
            name, _, value = part.partition("=")
            if name == self.by:
                return self.variants.get(_unescape(value), self)
        return self

    def limit_of(self, measure: Measure) -> float | None:
        """This rule's limit on `measure`, or None."""
        return dict(self.limits).get(measure)


_Target = tuple[_Rule, str, float, float]  # rule, scope key, window start, window end


def _escape(value: str) -> str:
    # keeps scope keys unambiguous when a tenant or key name holds a separator
    return value.replace("%", "%25").replace(",", "%2C").replace("=", "%3D")


def _unescape(value: str) -> str:
    return value.replace("%3D", "=").replace("%2C", ",").replace("%25", "%")


def _scope_key(fields: tuple[str, ...], ctx: QuotaContext) -> str | None:
    parts = []
    for name in fields:
        value: str | None = getattr(ctx, name)
        if value is None:
            return None
        parts.append(f"{name}={_escape(value)}")
    return ",".join(parts)


def _measures(limit: QuotaLimit) -> tuple[tuple[Measure, float], ...]:
    out: list[tuple[Measure, float]] = []
    for measure in ("cost_usd", "tokens", "requests"):
        value = getattr(limit, measure)
        if value is not None:
            out.append((measure, float(value)))
    return tuple(out)


def _compile(quota: Quota) -> _Rule:
    unknown = set(quota.scope) - set(SCOPE_FIELDS)
    if unknown:
        raise ValueError(f"quota {quota.name!r}: unknown scope field(s) {sorted(unknown)}; use any of {SCOPE_FIELDS}")
    lim = quota.limit
    if lim.by_provider and lim.by_model:
        raise ValueError(f"quota {quota.name!r}: give by_provider or by_model, not both")
    by = "provider" if lim.by_provider else "model" if lim.by_model else None
    entries = lim.by_provider or lim.by_model
    limits = _measures(lim)
    if not limits and not entries:
        raise ValueError(f"quota {quota.name!r} limits nothing; set cost_usd, tokens or requests")
    step = step_of(quota.window) or 0.0
    older = ROLLING_STEPS if step else 0  # the current step is partial: 24 whole ones before it cover the span
    # a map counts per provider (or model): the map's field joins the scope
    fields = tuple(f for f in SCOPE_FIELDS if f in quota.scope or f == by)
    variants: dict[str, _Rule] = {}
    for name, sub in entries:
        sub_limits = _measures(sub)
        if not sub_limits:
            raise ValueError(f"quota {quota.name!r}: the {by} {name!r} entry limits nothing")
        variants[name] = _Rule(quota, fields, sub_limits, step=step, older=older)
    return _Rule(quota, fields, limits, by, variants, step, older)


def _block(target: _Target, used: Usage, est_tokens: int, est_cost: float) -> QuotaBlock | None:
    rule, key, _, end = target
    for measure, limit in rule.limits:
        if measure == "requests":
            have, want, over = float(used.requests), 1.0, used.requests + 1 > limit
        elif measure == "tokens":
            have, want, over = float(used.tokens), float(est_tokens), used.tokens + est_tokens > limit
        else:
            have, want, over = used.cost_usd, est_cost, used.cost_usd + est_cost > limit + _COST_EPS
        if over:
            return QuotaBlock(rule.quota.name, rule.quota.on_exceed, key, measure, limit, have, want, end)
    return None


def _add(a: Usage, b: Usage) -> Usage:
    return a.plus(b.requests, b.tokens, b.cost_usd)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _check_amounts(tokens: int, cost: float) -> None:
    if tokens < 0 or cost < 0 or math.isnan(cost):
        raise ValueError(f"token and cost amounts must be >= 0, got tokens={tokens}, cost={cost}")
