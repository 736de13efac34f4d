"""`engine doctor`: probe every provider of a policy (keys, reachability, model ids)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from engine.cli.common import EXIT_INVALID, EXIT_OK, loaded_or_exit, policy_option, resolve_policy

if TYPE_CHECKING:
    from engine.ops.doctor import Check

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}


def render_checks(checks: Sequence[Check], *, title: str) -> None:
    """Print the checks as a table on stdout, with a summary line."""
    from rich.console import Console
    from rich.table import Table

    from engine.ops.doctor import summary

    table = Table(title=title, title_justify="left")
    for col in ("provider", "adapter", "model", "vendor id", "status", "problem", "ms", "detail"):
        table.add_column(col, justify="right" if col == "ms" else "left", overflow="fold", no_wrap=col != "detail",
                         ratio=1 if col == "detail" else None)
    for c in checks:
        style = _STYLE.get(c.status, "")
        table.add_row(c.provider, c.adapter, c.model, c.model_id, f"[{style}]{c.status}[/]", c.problem,
                      "" if c.latency_ms is None else f"{c.latency_ms:.0f}", c.detail)
    console = Console()
    console.print(table)
    console.print(summary(checks))


def run_checks(policy_path: str, timeout_s: float) -> list[Check]:
    """Load the policy (exit 1 on errors) and probe it."""
    from engine.ops.doctor import diagnose
    from engine.policy.api import load_policy

    policy = loaded_or_exit(policy_path, load_policy)
    return asyncio.run(diagnose(policy, timeout_s=timeout_s))


@click.command("doctor")
@policy_option
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Longest wait for one probe, in seconds (the provider's timeout_s if shorter).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def doctor_cmd(policy: str | None, timeout_s: float, as_json: bool) -> None:
    """Check that every model of the policy can be called from here.

    For each provider: are its credentials accepted, is it reachable, and does each of its
    model ids exist? Probes use the vendor's cheapest call (retrieving or listing models;
    nothing is generated or billed). Exit status 0 when every model is ready (or only rate
    limited), 1 when any fails.

    \b
    Example:
      engine doctor --policy policies/production.example.yaml
    """
    path = str(resolve_policy(policy))
    checks = run_checks(path, timeout_s)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        from engine.ops.doctor import summary

        click.echo(json.dumps({"policy": path, "ok": not failed, "summary": summary(checks),
                               "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        render_checks(checks, title=f"engine doctor: {path}")
    raise SystemExit(EXIT_INVALID if failed else EXIT_OK)
