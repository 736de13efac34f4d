"""The one vocabulary of request outcomes, shared by the decision log, `engine stats`,
`engine report`, the dashboard and `/metrics`.

| outcome | the request... | HTTP (engine serve) |
|---|---|---|
| `served` | was answered by a model | 200 |
| `cached` | was answered from the response cache | 200 |
| `failed` | got no answer: every model the plan tried failed | 503 (400 when every failure was the input's) |
| `refused_policy` | was refused by the policy: no model of the route may take it | 422 |
| `refused_quota` | was refused by a quota with `on_exceed: reject` | 429 `insufficient_quota` |
| `rate_limited` | found every eligible model at its rate limit (vendor 429s or the policy's limits) | 429 |
| `no_model` | found no model available: those the policy allows have open circuits | 503 `no_model_available` |
| `bad_request` | was malformed, rejected before routing | 400 |

Logs written before this vocabulary used `ok`, `error`, `refused` and `quota_exceeded`;
migration `m003_outcome_vocabulary` rewrites them, and readers of files opened read-only select
`OUTCOME_SQL` instead of the bare column so that such a file reads the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

__all__ = [
    "ANSWERED",
    "COLORS",
    "LABELS",
    "LEGACY",
    "OUTCOMES",
    "OUTCOME_SQL",
    "RATE_LIMIT_CLASSES",
    "Outcome",
    "outcome_of_error",
    "vocabulary",
]

Outcome = Literal["served", "cached", "failed", "refused_policy", "refused_quota", "rate_limited", "no_model",
                  "bad_request"]

OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
"""Every outcome, in the order charts stack and tables list them."""

ANSWERED: frozenset[Outcome] = frozenset(("served", "cached"))
"""Outcomes where the caller got an answer."""

LABELS: dict[Outcome, str] = {
    "served": "served by a model", "cached": "served from cache", "failed": "failed (every model tried)",
    "refused_policy": "refused by policy", "refused_quota": "refused by quota", "rate_limited": "rate limited",
    "no_model": "no model available", "bad_request": "bad request",
}
"""Legend text of each outcome."""

COLORS: dict[Outcome, str] = {
    "served": "#2e7d32", "cached": "#81c784", "failed": "#c62828", "refused_policy": "#6a1b9a",
    "refused_quota": "#ef6c00", "rate_limited": "#f9a825", "no_model": "#1565c0", "bad_request": "#757575",
}
"""Colour of each outcome, the same in the report and the dashboard."""

LEGACY: dict[str, Outcome] = {"ok": "served", "error": "failed", "refused": "refused_policy",
                              "quota_exceeded": "refused_quota"}
"""Values of logs written before this vocabulary, and what they mean in it (roughly: a legacy
`ok` from the cache is `cached`, a legacy `refused` by open circuits is `no_model`; see OUTCOME_SQL)."""

RATE_LIMIT_CLASSES = frozenset(("RateLimited", "RateLimitedLocally"))
"""Attempt error classes that mean "rate limited" (by the vendor, or by the policy's own limits)."""

OUTCOME_SQL = (
    "(case outcome when 'ok' then (case when cache_hit then 'cached' else 'served' end) "
    "when 'error' then 'failed' when 'quota_exceeded' then 'refused_quota' "
    "when 'refused' then (case when error_message like '%circuit open%' then 'no_model' "
    "when error_message like '%unavailable: rate limit%' then 'rate_limited' else 'refused_policy' end) "
    "else outcome end)"
)
"""SQL for the outcome of a `requests` row in this vocabulary, whichever vocabulary wrote it."""

_CIRCUIT, _LIMITED = "circuit open", "unavailable: rate limit"


def _refusal(decision: Any) -> Outcome:
    reasons = [c.reason or "" for c in getattr(decision, "candidates", ()) if not c.eligible]
    if any(r.startswith(_CIRCUIT) for r in reasons):
        return "no_model"
    if any(r.startswith(_LIMITED) for r in reasons):
        return "rate_limited"
    return "refused_policy"


def outcome_of_error(error: BaseException, tried: Sequence[str] | None = None) -> Outcome:
    """The outcome of a request that ended in `error` (an engine error; anything else: failed).

    Args:
        error: what the request raised.
        tried: error classes of the attempts the request made or was denied by a rate limit
            (default: those `AllModelsFailed` lists); all rate limits make it `rate_limited`.
    """
    from engine.errors import (
        AllModelsFailed,
        QuotaExceeded,
        RateLimitExceeded,
        RequestError,
        RoutingRefused,
        StateUnavailable,
    )

    if isinstance(error, RateLimitExceeded):  # a tenant / key `limits` entry
        return "rate_limited"
    if isinstance(error, StateUnavailable):  # the shared store is down and quotas fail closed: a quota refusal
        return "refused_quota"
    if isinstance(error, QuotaExceeded):
        return "refused_quota"
    if isinstance(error, RoutingRefused):
        return _refusal(error.decision)
    if isinstance(error, RequestError):
        return "bad_request"
    if isinstance(error, AllModelsFailed):
        if tried is None:
            tried = [cls for _, cls, _ in error.attempts if cls != "Skipped"]
        if tried and all(cls in RATE_LIMIT_CLASSES for cls in tried):
            return "rate_limited"
    return "failed"


def vocabulary() -> list[dict[str, str]]:
    """The outcomes with their labels and colours, as JSON data (for the dashboard)."""
    return [{"outcome": o, "label": LABELS[o], "color": COLORS[o]} for o in OUTCOMES]
