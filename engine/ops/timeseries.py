"""Time series and breakdowns of a decision log: the data behind `engine report`'s charts.

Plain values only (no charting library here), so tests can check the numbers and the report
module only draws them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.store.outcomes import OUTCOME_SQL, OUTCOMES
from engine.store.query import open_readonly

__all__ = ["BUCKET_SIZES", "Series", "bucket_size", "series"]

BUCKET_SIZES: tuple[float, ...] = (10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
"""Candidate widths of a time bucket, in seconds; the smallest giving at most `MAX_BUCKETS` is used."""
MAX_BUCKETS = 60


def bucket_size(span_s: float) -> float:
    """The bucket width for a log spanning `span_s` seconds."""
    for size in BUCKET_SIZES:
        if span_s / size <= MAX_BUCKETS:
            return size
    return BUCKET_SIZES[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    """Per-bucket figures of a log, oldest bucket first.

    Attributes:
        starts: Unix time each bucket starts at; bucket_s: their width.
        requests, errors (outcome failed), fallbacks, cache_hits, quota_refused (outcome
            refused_quota): counts per bucket.
        outcomes: requests per outcome (every one of `engine.store.outcomes.OUTCOMES`) per bucket.
        attempts, failed_attempts: model calls per bucket (retries included, skips excluded).
        cost_by_model: model -> cost per bucket (requests no model served are left out: they cost
            only what their failed attempts cost, counted under `(not served)`).
        saved_by_cache: cost the cache avoided, per bucket.
        spend_by_tenant: tenant -> cumulative cost at the end of each bucket.
        route_counts, query_type_counts: requests per route and per query type (None: not routed).
    """

    starts: tuple[float, ...]
    bucket_s: float
    requests: tuple[int, ...]
    errors: tuple[int, ...]
    fallbacks: tuple[int, ...]
    cache_hits: tuple[int, ...]
    quota_refused: tuple[int, ...]
    attempts: tuple[int, ...]
    failed_attempts: tuple[int, ...]
    cost_by_model: Mapping[str, tuple[float, ...]]
    saved_by_cache: tuple[float, ...]
    spend_by_tenant: Mapping[str, tuple[float, ...]]
    route_counts: Mapping[str, int]
    query_type_counts: Mapping[str, int]
    outcomes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def rate(self, part: Sequence[int], whole: Sequence[int]) -> list[float | None]:
        """part / whole per bucket (None where a bucket is empty)."""
        return [p / w if w else None for p, w in zip(part, whole, strict=True)]


def series(db_path: str | Path, since: float | None = None, *, bucket_s: float | None = None) -> Series:
    """Bucket a decision log by time.

    Raises:
        FileNotFoundError: no file at `db_path`.
    """
    db = open_readonly(db_path)
    try:
        where, params = (" where ts >= ?", [since]) if since is not None else ("", [])
        rows = db.conn.execute(
            f"select ts, model, route, query_type, tenant, {OUTCOME_SQL}, cost_usd, fallbacks, cache_hit, "
            f"saved_cost_usd from requests{where} order by ts", params).fetchall()
        attempts = db.conn.execute(f"select ts, outcome from attempts{where}", params).fetchall()
    finally:
        db.close()
    if not rows:
        return _empty()
    first, last = rows[0][0], rows[-1][0]
    size = bucket_s or bucket_size(last - first)
    origin = math.floor(first / size) * size
    n = int((last - origin) // size) + 1

    def at(ts: float) -> int:
        return min(n - 1, max(0, int((ts - origin) // size)))

    counts = {k: [0] * n for k in ("requests", "errors", "fallbacks", "cache_hits", "quota_refused", "attempts",
                                   "failed")}
    by_outcome: dict[str, list[int]] = {o: [0] * n for o in OUTCOMES}
    saved = [0.0] * n
    cost: dict[str, list[float]] = {}
    spend: dict[str, list[float]] = {}
    routes: Counter[str] = Counter()
    qts: Counter[str] = Counter()
    for ts, model, route, qt, tenant, outcome, c, fallbacks, hit, sv in rows:
        i = at(ts)
        counts["requests"][i] += 1
        by_outcome.setdefault(outcome, [0] * n)[i] += 1
        counts["errors"][i] += outcome == "failed"
        counts["fallbacks"][i] += (fallbacks or 0) > 0
        counts["cache_hits"][i] += bool(hit)
        counts["quota_refused"][i] += outcome == "refused_quota"
        saved[i] += sv or 0.0
        cost.setdefault(model or "(not served)", [0.0] * n)[i] += c or 0.0
        spend.setdefault(tenant or "(none)", [0.0] * n)[i] += c or 0.0
        if outcome != "bad_request":
            routes[route or "(no route)"] += 1
            qts[qt or "(unknown)"] += 1
    for ts, outcome in attempts:
        if outcome == "skipped":
            continue
        i = at(ts)
        counts["attempts"][i] += 1
        counts["failed"][i] += outcome != "ok"
    cumulative = {t: tuple(_cumsum(v)) for t, v in spend.items()}
    return Series(
        starts=tuple(origin + k * size for k in range(n)), bucket_s=size, requests=tuple(counts["requests"]),
        errors=tuple(counts["errors"]), fallbacks=tuple(counts["fallbacks"]), cache_hits=tuple(counts["cache_hits"]),
        quota_refused=tuple(counts["quota_refused"]), attempts=tuple(counts["attempts"]),
        failed_attempts=tuple(counts["failed"]),
        cost_by_model={m: tuple(v) for m, v in sorted(cost.items(), key=lambda kv: -sum(kv[1]))},
        saved_by_cache=tuple(saved), spend_by_tenant=dict(sorted(cumulative.items(), key=lambda kv: -kv[1][-1])),
        route_counts=dict(routes.most_common()), query_type_counts=dict(qts.most_common()),
        outcomes={o: tuple(v) for o, v in by_outcome.items()})


def _cumsum(values: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def _empty() -> Series:
    return Series(starts=(), bucket_s=BUCKET_SIZES[0], requests=(), errors=(), fallbacks=(), cache_hits=(),
                  quota_refused=(), attempts=(), failed_attempts=(), cost_by_model={}, saved_by_cache=(),
                  spend_by_tenant={}, route_counts={}, query_type_counts={})


def as_dict(s: Series) -> dict[str, Any]:
    """JSON-friendly view (embedded in the report for scripts that read it)."""
    return {
        "starts": list(s.starts), "bucket_s": s.bucket_s, "requests": list(s.requests), "errors": list(s.errors),
        "fallbacks": list(s.fallbacks), "cache_hits": list(s.cache_hits), "quota_refused": list(s.quota_refused),
        "attempts": list(s.attempts), "failed_attempts": list(s.failed_attempts),
        "cost_by_model": {k: list(v) for k, v in s.cost_by_model.items()}, "saved_by_cache": list(s.saved_by_cache),
        "spend_by_tenant": {k: list(v) for k, v in s.spend_by_tenant.items()}, "route_counts": dict(s.route_counts),
        "query_type_counts": dict(s.query_type_counts), "outcomes": {k: list(v) for k, v in s.outcomes.items()},
    }
