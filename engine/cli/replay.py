"""`engine replay`: what would another policy have done with the traffic in a decision log?"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.stats import DB_HELP

if TYPE_CHECKING:
    from rich.console import Console

    from engine.ops.replay import ReplayReport
    from engine.policy.model import Policy


@click.command("replay")
@click.option("--db", "dbs", type=click.Path(dir_okay=False), envvar="ENGINE_LOG_DB", required=True, multiple=True,
              help=DB_HELP)
@click.option("--policy", "-p", "policy", type=click.Path(dir_okay=False, exists=True), required=True,
              help="The policy to try.")
@click.option("--baseline", "-B", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The policy that wrote the log (default: $ENGINE_POLICY or the bundled default when its digest "
                   "matches the log's; else the logged decisions are the baseline).")
@click.option("--since", "-s", default=None, metavar="WHEN",
              help="Only requests since then: 30m, 1h, 2d, 1w, an ISO date or time, or a Unix timestamp.")
@click.option("--examples", type=click.IntRange(min=0), default=10, show_default=True,
              help="Changed or refused requests to list.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def replay_cmd(dbs: tuple[str, ...], policy: str, baseline: str | None, since: str | None, examples: int,
               as_json: bool) -> None:
    """Re-decide every logged request under POLICY: how many change route or model, the
    estimated cost difference, and which would be refused.

    Requests the log cannot settle exactly (a new signal that reads prompt text the log kept
    only as a hash) are counted with the reason, never guessed.

    \b
    Example:
      engine replay --db engine-demo/decisions.db --policy policies/cheaper.yaml
    """
    from engine.cli.common import load_compiled_or_exit
    from engine.ops.logstats import parse_since
    from engine.ops.replay import replay
    from engine.store.merge import merged_log

    try:
        since_ts = parse_since(since)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    new = load_compiled_or_exit(Path(policy)).policy
    label = " + ".join(dbs)
    try:
        with merged_log(dbs) as db:
            base = _baseline(db, baseline)
            report = replay(db, new, baseline=base, since=since_ts, examples=examples)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except click.ClickException:
        raise
    except Exception as e:  # sqlite3.DatabaseError: not an SQLite file, or not a decision log
        raise click.ClickException(f"cannot replay {label}: {e}") from None
    report = dataclasses.replace(report, db=label)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
        return
    from engine.cli.stats import console

    render_replay(report, console())


def _baseline(db: str, explicit: str | None) -> Policy | None:
    from engine.cli.common import load_compiled_or_exit
    from engine.cli.stats import log_policy

    if explicit:
        return load_compiled_or_exit(Path(explicit)).policy  # type: ignore[no-any-return]
    return log_policy(db, None)


def render_replay(r: ReplayReport, out: Console) -> None:
    """Print a replay report as text and tables."""
    from rich.table import Table

    from engine.cli.stats import pct, usd, when

    base = (f"the baseline policy {r.baseline} decided again in the same conditions" if r.baseline
            else "the decisions as logged (give --baseline to leave out the runtime effects of the time)")
    out.print(f"[bold]Replay[/bold] of {r.rows:,} logged requests from {r.db} under [bold]{r.policy}[/bold], "
              f"compared with {base}.")
    n = r.replayed or 1
    t = Table(show_header=False, title="Summary", title_justify="left", title_style="bold")
    t.add_column(style="dim")
    t.add_column(justify="right")
    t.add_row("re-decided exactly", f"{r.replayed:,}")
    t.add_row("route would change", f"{r.route_changed:,} ({pct(r.route_changed / n)})")
    t.add_row("first model would change", f"{r.model_changed:,} ({pct(r.model_changed / n)})")
    t.add_row("plan would change", f"{r.plan_changed:,} ({pct(r.plan_changed / n)})")
    refused = sum(r.newly_refused.values())
    kinds = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in sorted(r.newly_refused.items()))
    t.add_row("would be refused (newly)", f"{refused:,}" + (f" ({kinds})" if kinds else ""))
    t.add_row("would no longer be refused", f"{r.no_longer_refused:,}")
    delta = r.new_cost_usd - r.old_cost_usd
    rel = f" ({delta / r.old_cost_usd:+.1%})" if r.old_cost_usd else ""
    t.add_row(f"estimated cost of {r.costed:,} served requests", f"{usd(r.old_cost_usd)} -> {usd(r.new_cost_usd)}")
    t.add_row("estimated cost difference", f"{'+' if delta >= 0 else '-'}{usd(abs(delta))}{rel}")
    t.add_row("logged cost of the replayed requests", usd(r.logged_cost_usd))
    if r.runtime_shaped is not None:
        t.add_row("logged decisions shaped by runtime state", f"{r.runtime_shaped:,}")
    out.print(t)
    for title, counts in (("Not re-decidable exactly", r.inexact), ("Left out of the cost comparison", r.uncosted),
                          ("Skipped", r.skipped)):
        for reason, count in counts.items():
            out.print(f"[bold]{title}[/bold]: {count:,}: {reason}")
    if r.transitions:
        tt = Table(title="Changes of first model", title_justify="left", title_style="bold")
        for c in ("from", "to", "requests", "est. cost before", "est. cost after"):
            tt.add_column(c, justify="left" if c in ("from", "to") else "right")
        for tr in r.transitions:
            tt.add_row(tr["old_model"] or "(refused)", tr["new_model"] or "(refused)", f"{tr['count']:,}",
                       usd(tr["old_cost_usd"]), usd(tr["new_cost_usd"]))
        out.print(tt)
    if r.examples:
        te = Table(title="Examples", title_justify="left", title_style="bold")
        for c in ("time", "tenant", "query type", "before", "after", "why refused"):
            te.add_column(c)
        for e in r.examples:
            te.add_row(when(e["ts"]), str(e["tenant"] or "-"), str(e["query_type"]),
                       f"{e['old_route']} / {e['old_model'] or 'refused'}",
                       f"{e['new_route']} / {e['new_model'] or 'refused'}", _short(e["refusal"] or "", 140))
        out.print(te)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
