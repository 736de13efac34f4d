"""`engine stats`: requests, tokens, cost, latency, errors, fallbacks, cache, quotas and feedback
from a decision log, as rich tables (or one JSON object).

The tables are also what `engine demo` prints at the end of its run (`render_group_table` and
friends), so the demo's numbers are `engine stats`'s numbers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from engine.ops.logstats import StatsReport
    from engine.policy.model import Policy

DB_HELP = ("Decision log (SQLite) to read; repeat it for the logs of several replicas, read as one "
           "[env: ENGINE_LOG_DB, several separated by spaces].")


@click.command("stats")
@click.option("--db", "dbs", type=click.Path(dir_okay=False), envvar="ENGINE_LOG_DB", required=True, multiple=True,
              help=DB_HELP)
@click.option("--since", "-s", default=None, metavar="WHEN",
              help="Only requests since then: a duration back from now (30m, 1h, 2d, 1w), an ISO date or time, "
                   "or a Unix timestamp.")
@click.option("--by", "-b", "by", type=click.Choice(["model", "route", "tenant", "query_type"]), default="model",
              show_default=True, help="Grouping of the main table.")
@click.option("--policy", "-p", "policy", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Policy that wrote the log, for quota limits (default: $ENGINE_POLICY or the bundled default "
                   "when its digest matches the log's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def stats_cmd(dbs: tuple[str, ...], since: str | None, by: str, policy: str | None, as_json: bool) -> None:
    """Usage and cost from a decision log: per model, route, tenant or query type.

    \b
    Examples:
      engine stats --db engine-demo/decisions.db
      engine stats --db decisions.db --since 1h --by tenant
      engine stats --db decisions.db --by query_type --json | jq .groups
      engine stats --db replica1.db --db replica2.db --db replica3.db
    """
    import dataclasses

    from engine.ops.logstats import collect, parse_since
    from engine.store.merge import merged_log

    try:
        since_ts = parse_since(since)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    label = " + ".join(dbs)
    try:
        with merged_log(dbs) as db:
            pol = log_policy(db, policy)
            report = collect(db, since=since_ts, by=by, policy=pol)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # sqlite3.DatabaseError: not an SQLite file, or not readable
        raise click.ClickException(f"cannot read {label}: {e}") from None
    report = dataclasses.replace(report, db=label)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
        return
    render_stats(report, console())


def log_policy(db: str | Path, explicit: str | None) -> Policy | None:
    """The policy given with --policy, else the default one if it is the policy that wrote the log."""
    from engine.cli.common import resolve_policy
    from engine.ops.logstats import log_digests
    from engine.policy.api import load_policy

    if explicit:
        try:
            return load_policy(explicit)
        except Exception as e:
            raise click.ClickException(f"--policy {explicit}: {e}") from None
    try:
        digests = log_digests(db)
        candidate = load_policy(resolve_policy(None))
    except Exception:  # no log (reported by the caller) or no usable default: limits are optional
        return None
    return candidate if candidate.digest in digests else None


def console() -> Console:
    """A console for tables; wide enough for them when output is not a terminal."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=150)


# -- formatting --------------------------------------------------------------------------------

def usd(v: float | None) -> str:
    """Dollars, with enough digits for per-request costs."""
    if v is None:
        return "-"
    return f"${v:,.2f}" if abs(v) >= 100 else f"${v:,.4f}"


def ms(v: float | None) -> str:
    """Milliseconds."""
    return "-" if v is None else (f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms")


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def pct(v: float | None) -> str:
    """A ratio as a percentage."""
    return "-" if v is None else f"{v * 100:.1f}%"


def when(ts: float | None) -> str:
    """A Unix time in UTC."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(title: str, *columns: str) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", title_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right", no_wrap=i == 0)
    return t


# -- tables ------------------------------------------------------------------------------------

def render_totals(totals: Mapping[str, Any]) -> Table:
    """The whole window, as metric/value pairs."""
    from rich.table import Table

    pairs = [
        ("requests", f"{totals['requests']:,}"),
        ("answered", f"{totals['answered']:,} ({pct(_share(totals['answered'], totals['requests']))})"),
        ("failed", f"{totals['errors']:,} ({pct(totals['error_rate'])})"),
        ("tokens in / out", f"{totals['input_tokens']:,} / {totals['output_tokens']:,}"),
        ("cost", usd(totals["cost_usd"])),
        ("cache hits", f"{totals['cache_hits']:,} ({pct(totals['cache_hit_rate'])})"),
        ("saved by the cache", usd(totals["saved_cost_usd"])),
        ("  of which semantic", f"{totals['semantic_hits']:,} hits, {usd(totals['semantic_saved_cost_usd'])} saved"),
        ("fell back", f"{totals['fallbacks']:,} ({pct(totals['fallback_rate'])})"),
        ("downgraded by a quota", f"{totals['downgraded']:,}"),
        ("with tools / tool calls made", f"{totals.get('tool_requests', 0):,} / {totals.get('tool_calls', 0):,}"),
        ("structured output / images", f"{totals.get('json_requests', 0):,} / {totals.get('image_requests', 0):,}"),
        ("finish reasons", ", ".join(f"{k} {v:,}" for k, v in (totals.get("finish_reasons") or {}).items()) or "-"),
        ("latency p50 / p95 / p99", f"{ms(totals['latency_p50_ms'])} / {ms(totals['latency_p95_ms'])} / "
                                    f"{ms(totals['latency_p99_ms'])}"),
        ("feedback", "-" if not totals["feedback_count"] else
         f"{totals['feedback_count']:,} (mean {totals['feedback_mean']:.2f})"),
    ]
    t = Table(title="Overview", title_justify="left", title_style="bold", show_header=False)
    for _ in range(2):
        t.add_column(style="dim")
        t.add_column(justify="right")
    for i in range(0, len(pairs), 2):
        row = [*pairs[i], *(pairs[i + 1] if i + 1 < len(pairs) else ("", ""))]
        t.add_row(*row)
    return t


def render_outcomes(totals: Mapping[str, Any]) -> Table:
    """Requests per outcome (the vocabulary of `engine.store.outcomes`), each in its colour."""
    from engine.store.outcomes import COLORS, LABELS

    outcomes: Mapping[str, int] = totals["outcomes"]
    n = totals["requests"]
    t = _table("Requests by outcome", "outcome", "requests", "share", "meaning")
    for o, count in outcomes.items():
        color = COLORS.get(o, "")  # type: ignore[call-overload]
        t.add_row(f"[{color}]■[/] {o}" if color else o, f"{count:,}", pct(count / n if n else None),
                  LABELS.get(o, ""), style=None if count else "dim")  # type: ignore[call-overload]
    return t


def render_group_table(groups: Sequence[Mapping[str, Any]], by: str,
                       attempts: Sequence[Mapping[str, Any]] = (), *, title: str | None = None,
                       compact: bool = False) -> Table:
    """Per group: traffic, cost, latency, errors, fallbacks, cache and feedback.

    By model, `failed calls` counts the calls to that model that failed (their requests may
    still have been served by a fallback) and `fallbacks` the requests it served after another
    model; other groupings show requests that ended in error. `compact` leaves out tokens, p99
    and feedback (the demo's summary).
    """
    failed = {a["model"]: a for a in attempts}
    label = by.replace("_", " ")
    errors = "failed calls" if by == "model" else "errors"
    cols = [label, "requests", "share"] + ([] if compact else ["tokens"]) + ["cost", "p50", "p95"] + (
        [] if compact else ["p99"]) + [errors, "fallbacks", "cache hits"] + ([] if compact else ["feedback"])
    t = _table(title or f"By {label}", *cols)
    if by == "model":  # models that were called but never served a request: their failures count too
        shown = {g[by] for g in groups}
        groups = [*groups, *({by: a["model"], "requests": 0, "share": 0.0, "tokens": 0, "cost_usd": 0.0,
                              "latency_p50_ms": None, "latency_p95_ms": None, "latency_p99_ms": None,
                              "errors": 0, "error_rate": 0.0, "fallbacks": 0, "cache_hits": 0,
                              "feedback_count": 0, "feedback_mean": None}
                             for a in attempts if a["model"] not in shown)]
    for g in groups:
        key = g[by]
        name = "(not served)" if key is None and by == "model" else ("(none)" if key is None else str(key))
        if by == "model":
            a = failed.get(key)
            err = f"{a['failed']:,} ({pct(a['error_rate'])})" if a else "-"
        else:
            err = f"{g['errors']:,} ({pct(g['error_rate'])})"
        fb = "-" if not g["feedback_count"] else f"{g['feedback_mean']:.2f} (n={g['feedback_count']})"
        row = [name, f"{g['requests']:,}", pct(g["share"])] + ([] if compact else [f"{g['tokens']:,}"]) + [
            usd(g["cost_usd"]), ms(g["latency_p50_ms"]), ms(g["latency_p95_ms"])] + (
            [] if compact else [ms(g["latency_p99_ms"])]) + [err, f"{g['fallbacks']:,}", f"{g['cache_hits']:,}"] + (
            [] if compact else [fb])
        t.add_row(*row)
    return t


def render_attempts(attempts: Sequence[Mapping[str, Any]]) -> Table:
    """Per model: calls made and how they failed."""
    t = _table("Attempts by model", "model", "attempts", "ok", "failed", "error rate", "skipped", "failures")
    for a in attempts:
        errs = ", ".join(f"{k} {v}" for k, v in a["errors"].items()) or "-"
        t.add_row(a["model"], f"{a['attempts']:,}", f"{a['ok']:,}", f"{a['failed']:,}", pct(a["error_rate"]),
                  f"{a['skipped']:,}", errs)
    return t


def render_quotas(quotas: Sequence[Mapping[str, Any]], refusals: Sequence[Mapping[str, Any]]) -> Table:
    """Latest window of each quota and scope, and refusals."""
    refused = {(r["tenant"], r["quota"]): r["refused"] for r in refusals}
    t = _table("Quotas (latest window)", "quota", "scope", "window from", "requests", "tokens", "cost", "used",
               "refused")
    for q in quotas:
        used = "-" if q.get("used_ratio") is None else pct(q["used_ratio"])
        tenant = q.get("tenant")
        n = refused.pop((tenant, q["quota"]), 0) if tenant is not None else 0
        t.add_row(q["quota"], q["scope_key"] or "(global)", when(q["window_start"]), f"{q['requests']:,}",
                  f"{q['tokens']:,}", usd(q["cost_usd"]), used, f"{n:,}" if n else "-")
    for (tenant, quota), n in refused.items():  # refusals whose window is not the latest one
        t.add_row(quota or "?", f"tenant={tenant}", "-", "-", "-", "-", "-", f"{n:,}")
    return t


def render_feedback(feedback: Sequence[Mapping[str, Any]]) -> Table:
    """Feedback per model and query type."""
    t = _table("Feedback by model and query type", "model", "query type", "count", "mean score", "min", "max",
               "labels")
    for f in feedback:
        labels = ", ".join(f"{k} {v}" for k, v in f["labels"].items()) or "-"
        mean = "-" if f["mean"] is None else f"{f['mean']:.2f}"
        t.add_row(str(f["model"]), str(f["query_type"]), f"{f['count']:,}", mean,
                  "-" if f["min"] is None else f"{f['min']:g}", "-" if f["max"] is None else f"{f['max']:g}", labels)
    return t


def render_events(events: Sequence[Mapping[str, Any]]) -> Table:
    """Health and other state changes."""
    t = _table("Events", "kind", "model", "count", "last")
    for e in events:
        t.add_row(e["kind"], e["model"] or "-", f"{e['count']:,}", when(e["last_ts"]))
    return t


def render_stats(report: StatsReport, out: Console) -> None:
    """Print every table of `engine stats`."""
    tot = report.totals
    span = f"from {when(tot['first_ts'])} to {when(tot['last_ts'])}" if tot["requests"] else "(no requests)"
    since = f" (since {when(report.since)})" if report.since is not None else ""
    out.print(f"[bold]{report.db}[/bold]: {tot['requests']:,} requests {span}{since}")
    out.print(render_totals(tot))
    if tot["requests"]:
        out.print(render_outcomes(tot))
    if report.groups:
        out.print(render_group_table(report.groups, report.by, report.attempts))
    if report.attempts:
        out.print(render_attempts(report.attempts))
    if report.quotas or report.quota_refusals:
        out.print(render_quotas(report.quotas, report.quota_refusals))
    if report.feedback:
        out.print(render_feedback(report.feedback))
    if report.events:
        out.print(render_events(report.events))
