"""Read side of the decision log: rows and per-group statistics (`engine stats`, dashboards).

Readers open the file read-only, so they never take the write lock and can run beside live
writers (WAL lets readers and one writer work at once). Aggregates that SQL has no function
for (latency percentiles) are computed here, in Python, from each group's rows.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from engine.store.outcomes import OUTCOME_SQL

__all__ = ["GROUP_BY", "GroupBy", "open_readonly", "percentile", "request_rows", "summary"]

GroupBy = Literal["model", "route", "tenant", "query_type"]
GROUP_BY: tuple[str, ...] = ("model", "route", "tenant", "query_type")
"""Columns `summary` can group by."""

_JSON_COLUMNS = ("plan", "meta", "features", "needs")
_BOOL_COLUMNS = ("cache_hit", "stream", "downgraded")


def open_readonly(path: str | Path) -> sqlite_utils.Database:
    """Open the log read-only (sqlite-utils `Database`); it never blocks or modifies the writers.

    Raises:
        FileNotFoundError: there is no file at `path`.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no decision log at {p}; check the policy's log.sqlite setting or the --db option")
    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    return sqlite_utils.Database(conn, execute_plugins=False)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted `values` (an observed value; None if empty).

    Nearest rank: the smallest value with at least p% of the values at or below it, so p50 of
    1..100 is 50 and p99 is 99.
    """
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def request_rows(db_path: str | Path, since_ts: float | None = None) -> list[dict[str, Any]]:
    """Every `requests` row (with `ts >= since_ts` if given), oldest first.

    `plan`, `meta`, `features` and `needs` come back decoded from JSON; `cache_hit`, `stream` and
    `downgraded` as booleans; `outcome` in the vocabulary of `engine.store.outcomes`.
    """
    db = open_readonly(db_path)
    try:
        sql, params = _where(f"select *, {OUTCOME_SQL} as outcome_now from requests", since_ts)
        rows = list(db.query(sql + " order by ts, id", params))
    finally:
        db.close()
    for row in rows:
        row["outcome"] = row.pop("outcome_now")
        for col in _JSON_COLUMNS:
            if row.get(col) is not None:  # a file written before m002 has no `needs`
                row[col] = json.loads(row[col])
        for col in _BOOL_COLUMNS:
            if row[col] is not None:
                row[col] = bool(row[col])
    return rows


def summary(db_path: str | Path, since_ts: float | None = None, by: GroupBy = "model") -> list[dict[str, Any]]:
    """Per-group traffic, cost, latency and quality, most requests first.

    Each dict holds: the group key (under the name of `by`; None for rows without one, such as
    refused requests when grouping by model), `requests`, `share` (of all requests in the
    window), `input_tokens`, `output_tokens`, `tokens`, `cost_usd`, `latency_p50_ms`,
    `latency_p95_ms`, `latency_p99_ms` (nearest rank over rows with a latency), `errors` and
    `error_rate` (outcome `failed`: the router could not get an answer), `outcomes` (count per
    outcome of `engine.store.outcomes`), `fallbacks` and `fallback_rate` (requests served or
    failed after trying more than one model), `cache_hits`, `cache_hit_rate`, `saved_cost_usd`, `feedback_count` and
    `feedback_mean` (scores of the group's requests; None without any).

    Raises:
        ValueError: `by` is not one of `GROUP_BY`.
        FileNotFoundError: there is no file at `db_path`.
    """
    if by not in GROUP_BY:
        raise ValueError(f"summary() groups by one of {', '.join(GROUP_BY)}, not {by!r}")
    db = open_readonly(db_path)
    try:
        sql, params = _where(
            f"select id, {by} as key, {OUTCOME_SQL}, input_tokens, output_tokens, cost_usd, latency_ms, fallbacks, "
            "cache_hit, saved_cost_usd from requests",
            since_ts,
        )
        requests = list(db.execute(sql, params))
        fb_sql, fb_params = _where("select id from requests", since_ts)
        scores = list(
            db.execute(
                f"select request_id, score from feedback where score is not null and request_id in ({fb_sql})",
                fb_params,
            )
        )
    finally:
        db.close()
    return _aggregate(requests, scores, by)


def _where(select: str, since_ts: float | None) -> tuple[str, list[float]]:
    if since_ts is None:
        return select, []
    return select + " where ts >= ?", [since_ts]


class _Group:
    __slots__ = ("cache_hits", "cost", "errors", "fallbacks", "input", "latencies", "n", "outcomes", "output",
                 "saved", "scores")  # fmt: skip

    def __init__(self) -> None:
        self.n = 0
        self.input = 0
        self.output = 0
        self.cost: list[float] = []
        self.saved: list[float] = []
        self.latencies: list[float] = []
        self.errors = 0
        self.fallbacks = 0
        self.cache_hits = 0
        self.outcomes: dict[str, int] = {}
        self.scores: list[float] = []


def _aggregate(
    requests: Iterable[tuple[Any, ...]], scores: Iterable[tuple[str, float]], by: str
) -> list[dict[str, Any]]:
    groups: dict[Any, _Group] = {}
    group_of: dict[str, _Group] = {}
    total = 0
    for rid, key, outcome, inp, outp, cost, latency, fallbacks, cache_hit, saved in requests:
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group()
        group_of[rid] = g
        total += 1
        g.n += 1
        g.input += inp or 0
        g.output += outp or 0
        g.cost.append(cost or 0.0)
        g.saved.append(saved or 0.0)
        if latency is not None:
            g.latencies.append(latency)
        g.errors += outcome == "failed"
        g.fallbacks += (fallbacks or 0) > 0
        g.cache_hits += bool(cache_hit)
        g.outcomes[outcome] = g.outcomes.get(outcome, 0) + 1
    for rid, score in scores:
        group_of[rid].scores.append(score)
    out: list[dict[str, Any]] = []
    for key, g in groups.items():
        g.latencies.sort()
        out.append({
            by: key,
            "requests": g.n,
            "share": g.n / total,
            "input_tokens": g.input,
            "output_tokens": g.output,
            "tokens": g.input + g.output,
            "cost_usd": math.fsum(g.cost),
            "latency_p50_ms": percentile(g.latencies, 50),
            "latency_p95_ms": percentile(g.latencies, 95),
            "latency_p99_ms": percentile(g.latencies, 99),
            "errors": g.errors,
            "error_rate": g.errors / g.n,
            "outcomes": dict(sorted(g.outcomes.items())),
            "fallbacks": g.fallbacks,
            "fallback_rate": g.fallbacks / g.n,
            "cache_hits": g.cache_hits,
            "cache_hit_rate": g.cache_hits / g.n,
            "saved_cost_usd": math.fsum(g.saved),
            "feedback_count": len(g.scores),
            "feedback_mean": math.fsum(g.scores) / len(g.scores) if g.scores else None,
        })  # fmt: skip
    out.sort(key=lambda row: (-int(row["requests"]), row[by] is None, str(row[by])))
    return out
