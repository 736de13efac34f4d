"""`engine demo`: an offline run of realistic traffic through the router, then its numbers.

Everything printed at the end is read back from the decision log the run wrote, with the same
code as `engine stats` (`engine.ops.logstats.collect`), and the same log feeds the HTML report.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from engine.ops.demo import DemoResult
    from engine.ops.logstats import StatsReport
    from engine.policy.model import Policy


@click.command("demo")
@click.option("--out", "-o", "out", type=click.Path(file_okay=False), default="engine-demo", show_default=True,
              help="Folder for decisions.db and report.html (replaced if present).")
@click.option("--requests", "-n", "requests", type=click.IntRange(min=20), default=2000, show_default=True,
              help="Requests to send.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=32, show_default=True,
              help="Requests in flight at once.")
@click.option("--time-scale", type=click.FloatRange(min=0), default=0.02, show_default=True,
              help="Multiplier of simulated provider latencies and retry backoffs (1 = real time, 0 = instant).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the workload and the simulated faults.")
@click.option("--policy", "-p", "policy", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A policy whose providers are all simulated (default: the bundled offline policy).")
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
def demo_cmd(out: str, requests: int, concurrency: int, time_scale: float, seed: int, policy: str | None,
             no_report: bool) -> None:
    """Run a realistic mixed workload offline, on simulated providers, and summarise it.

    \b
    The run: chat, code, maths, summaries and long documents from five tenants; a support bot
    repeating questions (cache hits); a provider outage from 40% to 55% of the run; a burst
    that meets HTTP 429s; a premium tenant that spends its daily budget and is refused.
    Afterwards, try:
      engine stats  --db engine-demo/decisions.db --by tenant
      engine report --db engine-demo/decisions.db -o engine-demo/report.html
      engine replay --db engine-demo/decisions.db --policy my-policy.yaml
    """
    from engine.cli.stats import console
    from engine.policy.api import load_policy
    from engine.policy.bundled import default_policy_path

    path = Path(policy) if policy else default_policy_path()
    try:
        pol = load_policy(path)
    except Exception as e:
        raise click.ClickException(f"{path}: {e}") from None
    con = console()
    con.print(f"[bold]engine demo[/bold]: {requests:,} requests through the router on {path.name}, "
              f"simulated providers (latencies x{time_scale:g}), nothing leaves this machine.")
    try:
        result = asyncio.run(_run(pol, out, requests, concurrency, time_scale, seed, con))
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    summarise(result, pol, con, report=not no_report)


async def _run(policy: Policy, out: str, requests: int, concurrency: int, time_scale: float, seed: int,
               con: Console) -> DemoResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from engine.ops.demo import run_demo

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=con, transient=False) as progress:
        task = progress.add_task("routing", total=requests)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done)

        return await run_demo(policy, out, requests=requests, concurrency=concurrency, time_scale=time_scale,
                              seed=seed, on_progress=tick)


def summarise(result: DemoResult, policy: Policy, con: Console, *, report: bool = True) -> StatsReport:
    """Print the run's numbers (read back from its log) and write the report next to it."""
    from engine.cli.stats import render_group_table, render_outcomes, render_totals, usd, when
    from engine.ops.logstats import collect

    stats = collect(result.db_path, by="model", policy=policy)
    minutes = (result.end_ts - result.start_ts) / 60
    con.print(f"Sent {result.requests:,} requests in {result.wall_s:.1f} s "
              f"({minutes:.0f} minutes of traffic on the router's clock, {when(result.start_ts)} to "
              f"{when(result.end_ts)}).")
    con.print(render_totals(stats.totals))
    con.print(render_outcomes(stats.totals))
    con.print(render_group_table(stats.groups, "model", stats.attempts, title="Per model", compact=True))
    t = stats.totals
    con.print(f"Cache: {t['cache_hits']:,} hits ({t['cache_hit_rate']:.1%} of requests), "
              f"{usd(t['saved_cost_usd'])} not spent.")
    for r in stats.quota_refusals:
        con.print(f"Quota: tenant {r['tenant']} refused {r['refused']:,} times by {r['quota'] or 'a quota'}.")
    at = {e["kind"]: e["last_ts"] for e in stats.events if e["kind"].startswith("demo_")}
    con.print(f"Outage: every call to {result.outage_provider} ({', '.join(result.outage_models)}) failed from "
              f"{_hm(at.get('demo_outage_started'))} to {_hm(at.get('demo_outage_ended'))}.")
    if result.burst_model:
        con.print(f"Burst: support chat at ten times the rate from {_hm(at.get('demo_burst_started'))} to "
                  f"{_hm(at.get('demo_burst_ended'))}; {result.burst_model} answered half its calls with 429.")
    circuits: dict[str, dict[str, Any]] = {}
    for e in stats.events:
        if e["kind"] in ("circuit_open", "circuit_closed") and e["model"]:
            circuits.setdefault(e["model"], {})[e["kind"]] = e
    for model, kinds in circuits.items():
        opened, closed = kinds.get("circuit_open"), kinds.get("circuit_closed")
        line = f"Health: {model}'s circuit opened {opened['count'] if opened else 0} time(s)"
        con.print(line + (f", closed again at {_hm(closed['last_ts'])}." if closed else ", still open at the end."))
    con.print(f"Feedback: {result.feedback:,} simulated grades (label simulated-grader), "
              "see `engine stats` for the per model and query type table.")
    con.print(f"\nDecision log: [bold]{result.db_path}[/bold]")
    if report:
        from engine.ops.report import write_report

        path = write_report(result.db_path, result.db_path.parent / "report.html", policy=policy,
                            title="engine demo report")
        con.print(f"Report:       [bold]{path}[/bold] (open it in a browser; it works offline)")
    con.print(f"Next: engine stats --db {result.db_path} --by tenant   |   "
              f"engine replay --db {result.db_path} --policy NEW.yaml")
    return stats


def _hm(ts: float | None) -> str:
    """Time of day (UTC) on the router's clock."""
    return "?" if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%H:%M:%S")
