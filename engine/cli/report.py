"""`engine report`: a self-contained HTML report (charts) of a decision log, viewable offline."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.stats import DB_HELP


@click.command("report")
@click.option("--db", "dbs", type=click.Path(dir_okay=False), envvar="ENGINE_LOG_DB", required=True, multiple=True,
              help=DB_HELP)
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              help="HTML file to write.")
@click.option("--since", "-s", default=None, metavar="WHEN",
              help="Only requests since then: 30m, 1h, 2d, 1w, an ISO date or time, or a Unix timestamp.")
@click.option("--policy", "-p", "policy", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Policy that wrote the log, for quota limits (default: $ENGINE_POLICY or the bundled default "
                   "when its digest matches the log's).")
@click.option("--title", default="LLM router report", show_default=True, help="Page title.")
def report_cmd(dbs: tuple[str, ...], out: str, since: str | None, policy: str | None, title: str) -> None:
    """Write one HTML file of charts from a decision log: cost over time per model, request share
    per route and query type, latency per model, fallback and error rates, cache hit rate, quota
    consumption and feedback. The file has plotly.js inlined: it opens with no network.

    \b
    Example:
      engine report --db engine-demo/decisions.db -o report.html --since 1d
    """
    from engine.cli.stats import log_policy
    from engine.ops.logstats import parse_since
    from engine.ops.report import CHARTS, write_report
    from engine.store.merge import merged_log

    try:
        since_ts = parse_since(since)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    try:
        with merged_log(dbs) as db:
            pol = log_policy(db, policy)
            path = write_report(db, out, since=since_ts, policy=pol, title=title)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # sqlite3.DatabaseError: not an SQLite file, or not readable
        raise click.ClickException(f"cannot read {' + '.join(dbs)}: {e}") from None
    size = Path(path).stat().st_size / 1e6
    click.echo(f"Wrote {path} ({size:.1f} MB, {len(CHARTS)} chart sections; open it in a browser, no network needed)")
