"""Usage, cost, latency, errors, cache, quotas and feedback read from a decision log.

`collect()` is what `engine stats` prints and what `engine demo` summarises: per-group rows come
from `engine.store.query.summary` (one definition of "requests", "share", "error rate"... for
every reader); this module adds what a grouping cannot show: totals over the whole window,
failed attempts per model and error class, quota windows, quota refusals, feedback per model
and query type, and health events.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.policy.model import Policy
from engine.store.outcomes import OUTCOME_SQL, OUTCOMES
from engine.store.query import GROUP_BY, GroupBy, open_readonly, percentile, summary

__all__ = ["GROUP_BY", "StatsReport", "collect", "log_digests", "parse_since"]

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_QUOTA_NAME = re.compile(r"quota '([^']+)'")


def parse_since(text: str | None, *, now: float | None = None) -> float | None:
    """A `--since` value as a Unix time.

    Accepts a duration back from now (`90s`, `30m`, `1h`, `2d`, `1w`), an ISO date or datetime
    (UTC unless it says otherwise) or a Unix timestamp. None or an empty string means no limit.

    Raises:
        ValueError: the text is none of these (the message lists the accepted forms).
    """
    if text is None or not text.strip():
        return None
    now = time.time() if now is None else now
    m = _SINCE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use a duration (30m, 1h, 2d, 1w), an ISO date or datetime "
            "(2025-06-01, 2025-06-01T12:00) or a Unix timestamp") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsReport:
    """Everything `engine stats` shows for one log and one time window.

    Attributes:
        db: the decision log file.
        since: the window's start (Unix time), None for the whole log.
        by: the grouping of `groups`.
        totals: the whole window: counts per outcome, tokens, cost, savings, rates, latency percentiles.
        groups: `engine.store.query.summary` rows, most requests first.
        attempts: per model: attempts, failed attempts, skips and failures per error class.
        quotas: the latest window of each quota and scope key in the log (with limits when a
            policy was given).
        quota_refusals: refused requests per tenant and quota.
        feedback: per (model, query type): count, mean, min and max score, and label counts.
        events: health and policy events per kind and model.
    """

    db: str
    since: float | None
    by: str
    totals: Mapping[str, Any]
    groups: Sequence[Mapping[str, Any]]
    attempts: Sequence[Mapping[str, Any]] = ()
    quotas: Sequence[Mapping[str, Any]] = ()
    quota_refusals: Sequence[Mapping[str, Any]] = ()
    feedback: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `engine stats --json`."""
        return {
            "db": self.db, "since": self.since, "by": self.by, "totals": dict(self.totals),
            "groups": [dict(g) for g in self.groups], "attempts": [dict(a) for a in self.attempts],
            "quotas": [dict(q) for q in self.quotas], "quota_refusals": [dict(q) for q in self.quota_refusals],
            "feedback": [dict(f) for f in self.feedback], "events": [dict(e) for e in self.events],
        }


def collect(db_path: str | Path, *, since: float | None = None, by: GroupBy = "model",
            policy: Policy | None = None) -> StatsReport:
    """Read a decision log and compute `StatsReport`.

    Args:
        db_path: the SQLite decision log.
        since: only requests (attempts, events, feedback of requests) from this Unix time on.
        by: grouping of the per-group table: model, route, tenant or query_type.
        policy: when given, quota rows carry their limits and the share of each limit used.

    Raises:
        FileNotFoundError: no file at `db_path`.
        ValueError: `by` is not a known grouping, or the file is not a decision log.
    """
    groups = summary(db_path, since, by)
    db = open_readonly(db_path)
    try:
        conn = db.conn
        if "requests" not in db.table_names():
            raise ValueError(f"{db_path} is not a decision log (it has no requests table)")
        totals = _totals(conn, since)
        attempts = _attempts(conn, since)
        quotas = _quotas(conn, policy) if "quota_usage" in db.table_names() else []
        refusals = _refusals(conn, since)
        feedback = _feedback(conn, since)
        events = _events(conn, since)
    finally:
        db.close()
    return StatsReport(db=str(db_path), since=since, by=by, totals=totals, groups=groups, attempts=attempts,
                       quotas=quotas, quota_refusals=refusals, feedback=feedback, events=events)


def _where(since: float | None, column: str = "ts", prefix: str = "where") -> tuple[str, list[float]]:
    return (f" {prefix} {column} >= ?", [since]) if since is not None else ("", [])


def _totals(conn: sqlite3.Connection, since: float | None) -> dict[str, Any]:
    where, params = _where(since)
    row = conn.execute(
        "select count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
        "coalesce(sum(cost_usd), 0), coalesce(sum(saved_cost_usd), 0), coalesce(sum(cache_hit), 0), "
        "coalesce(sum(fallbacks > 0), 0), coalesce(sum(downgraded), 0), min(ts), max(ts), "
        f"coalesce(sum(attempts), 0) from requests{where}", params).fetchone()
    n, inp, outp, cost, saved, hits, fallbacks, downgraded, first, last, attempts = row
    sem_hits, sem_saved = conn.execute(
        "select count(*), coalesce(sum(saved_cost_usd), 0) from requests where cache_hit = 1 and "
        f"json_extract(features, '$.cache.kind') = 'semantic'{_where(since, prefix='and')[0]}", params).fetchone()
    counted = dict(conn.execute(f"select {OUTCOME_SQL} as o, count(*) from requests{where} group by o",
                                params).fetchall())
    outcomes = {o: int(counted.pop(o, 0)) for o in OUTCOMES}
    outcomes.update(counted)  # a value from a newer vocabulary is shown, not dropped
    latencies = [r[0] for r in conn.execute(
        f"select latency_ms from requests where latency_ms is not null{_where(since, prefix='and')[0]} "
        "order by latency_ms", params)]
    fb_where, fb_params = _where(since, "r.ts")
    fb_n, fb_mean = conn.execute(
        "select count(f.score), avg(f.score) from feedback f join requests r on r.id = f.request_id"
        f"{fb_where}", fb_params).fetchone()
    errors = outcomes["failed"]
    surface = _surface(conn, since)
    return {
        **surface,
        "requests": n, "outcomes": outcomes, "answered": outcomes["served"] + outcomes["cached"],
        "errors": errors, "quota_refused": outcomes["refused_quota"],
        "input_tokens": inp, "output_tokens": outp, "tokens": inp + outp, "cost_usd": cost, "saved_cost_usd": saved,
        "cache_hits": hits, "cache_hit_rate": hits / n if n else 0.0, "semantic_hits": sem_hits,
        "semantic_saved_cost_usd": sem_saved, "fallbacks": fallbacks,
        "fallback_rate": fallbacks / n if n else 0.0, "error_rate": errors / n if n else 0.0,
        "downgraded": downgraded, "attempts": attempts, "first_ts": first, "last_ts": last,
        "latency_p50_ms": percentile(latencies, 50), "latency_p95_ms": percentile(latencies, 95),
        "latency_p99_ms": percentile(latencies, 99), "feedback_count": fb_n, "feedback_mean": fb_mean,
    }


def _surface(conn: sqlite3.Connection, since: float | None) -> dict[str, Any]:
    """What the requests used of the request surface: tools offered, tool calls made, structured
    output, images, and how answers ended (columns of migration m002; zeros for older logs)."""
    cols = {r[1] for r in conn.execute("pragma table_info(requests)")}
    if "tool_calls" not in cols:
        return {"tool_requests": 0, "tool_calls": 0, "json_requests": 0, "image_requests": 0, "finish_reasons": {}}
    where, params = _where(since)
    tools, calls, json_out, images = conn.execute(
        "select coalesce(sum(tools_offered > 0), 0), coalesce(sum(tool_calls), 0), "
        "coalesce(sum(output_format in ('json_object', 'json_schema')), 0), coalesce(sum(images > 0), 0) "
        f"from requests{where}", params).fetchone()
    finish = dict(conn.execute(
        f"select finish_reason, count(*) from requests where finish_reason is not null"
        f"{_where(since, prefix='and')[0]} group by 1 order by 2 desc", params).fetchall())
    return {"tool_requests": tools, "tool_calls": calls, "json_requests": json_out, "image_requests": images,
            "finish_reasons": finish}


def _attempts(conn: sqlite3.Connection, since: float | None) -> list[dict[str, Any]]:
    where, params = _where(since)
    per: dict[str, dict[str, Any]] = {}
    for model, outcome, error_class, n in conn.execute(
            f"select model, outcome, error_class, count(*) from attempts{where} group by 1, 2, 3", params):
        row = per.setdefault(model, {"model": model, "attempts": 0, "ok": 0, "failed": 0, "skipped": 0,
                                     "errors": {}})
        if outcome == "skipped":
            row["skipped"] += n
            continue
        row["attempts"] += n
        if outcome == "ok":
            row["ok"] += n
        else:
            row["failed"] += n
            row["errors"][error_class or "Error"] = row["errors"].get(error_class or "Error", 0) + n
    out = []
    for row in per.values():
        row["error_rate"] = row["failed"] / row["attempts"] if row["attempts"] else 0.0
        row["errors"] = dict(sorted(row["errors"].items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(row)
    return sorted(out, key=lambda r: (-r["attempts"], r["model"]))


def _quotas(conn: sqlite3.Connection, policy: Policy | None) -> list[dict[str, Any]]:
    # The latest window of each quota and scope, whatever `since` says: a window that began
    # before it (today's, for a daily quota) is still the one that decides admissions now.
    latest: dict[tuple[str, str], tuple[float, int, int, float]] = {}
    for quota, key, start, requests, tokens, cost in conn.execute(
            "select quota, scope_key, window_start, requests, tokens, cost_usd from quota_usage"):
        prev = latest.get((quota, key))
        if prev is None or start > prev[0]:
            latest[(quota, key)] = (start, requests, tokens, cost)
    limits = {q.name: q for q in policy.quotas} if policy is not None else {}
    out: list[dict[str, Any]] = []
    for (quota, key), (start, requests, tokens, cost) in latest.items():
        row: dict[str, Any] = {"quota": quota, "scope_key": key, "tenant": _scope_fields(key).get("tenant"),
                               "window_start": start, "requests": requests, "tokens": tokens, "cost_usd": cost}
        q = limits.get(quota)
        if q is not None:
            row["window"] = q.window
            row["on_exceed"] = q.on_exceed
            used: list[float] = []
            for measure, value in (("requests", requests), ("tokens", tokens), ("cost_usd", cost)):
                limit = getattr(q.limit, measure)
                row[f"limit_{measure}"] = limit
                if limit:
                    used.append(value / limit)
            row["used_ratio"] = max(used) if used else None
        out.append(row)
    return sorted(out, key=lambda r: (r["quota"], -(r.get("used_ratio") or 0.0), -r["cost_usd"], r["scope_key"]))


def _scope_fields(key: str) -> dict[str, str]:
    """`tenant=a%2Cb,model=m` -> {"tenant": "a,b", "model": "m"} (the quota ledger's escaping undone)."""
    out: dict[str, str] = {}
    for part in key.split(",") if key else ():
        name, _, value = part.partition("=")
        out[name] = value.replace("%3D", "=").replace("%2C", ",").replace("%25", "%")
    return out


def _refusals(conn: sqlite3.Connection, since: float | None) -> list[dict[str, Any]]:
    where, params = _where(since, prefix="and")
    counts: dict[tuple[str | None, str | None], int] = {}
    for tenant, message in conn.execute(
            f"select tenant, error_message from requests where {OUTCOME_SQL} = 'refused_quota'{where}", params):
        m = _QUOTA_NAME.search(message or "")
        key = (tenant, m.group(1) if m else None)
        counts[key] = counts.get(key, 0) + 1
    return [{"tenant": t, "quota": q, "refused": n}
            for (t, q), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]


def _feedback(conn: sqlite3.Connection, since: float | None) -> list[dict[str, Any]]:
    where, params = _where(since, "r.ts")
    cells: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for model, qt, score, label in conn.execute(
            "select r.model, r.query_type, f.score, f.label from feedback f join requests r on r.id = f.request_id"
            + where, params):
        c = cells.setdefault((model, qt), {"model": model, "query_type": qt, "count": 0, "scores": [],
                                           "labels": {}})
        c["count"] += 1
        if score is not None:
            c["scores"].append(float(score))
        if label is not None:
            c["labels"][label] = c["labels"].get(label, 0) + 1
    out = []
    for c in cells.values():
        scores: list[float] = c.pop("scores")
        c["scored"] = len(scores)
        c["mean"] = math.fsum(scores) / len(scores) if scores else None
        c["min"] = min(scores) if scores else None
        c["max"] = max(scores) if scores else None
        out.append(c)
    return sorted(out, key=lambda c: (str(c["model"]), str(c["query_type"])))


def _events(conn: sqlite3.Connection, since: float | None) -> list[dict[str, Any]]:
    where, params = _where(since)
    return [{"kind": kind, "model": model, "count": n, "last_ts": last} for kind, model, n, last in conn.execute(
        f"select kind, model, count(*), max(ts) from events{where} group by 1, 2 order by 1, 2", params)]


def log_digests(db_path: str | Path) -> list[str]:
    """Policy digests found in the log, the most recently used first.

    Raises:
        FileNotFoundError: no file at `db_path`.
    """
    db = open_readonly(db_path)
    try:
        return [r[0] for r in db.conn.execute(
            "select policy_digest, max(ts) from requests where policy_digest is not null "
            "group by policy_digest order by 2 desc")]
    finally:
        db.close()
