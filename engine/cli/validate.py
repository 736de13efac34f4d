"""`engine validate`: every problem of every file, with file, line, column and JSON path."""

from __future__ import annotations

import json

import click


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty", show_default=True)
@click.option("--dry-run", is_flag=True,
              help="Validate without the secrets: an unset api_key variable is a warning (for CI).")
def validate_cmd(files: tuple[str, ...], strict: bool, fmt: str, dry_run: bool) -> None:
    """Check policy FILES: YAML, schema, references, expressions and static checks.

    Exit 0 when every file is valid, 1 when any has an error (or a warning, with --strict).
    For policies with `on_exceed: downgrade` quotas, also lists the models a downgrade can
    reach from each route.
    """
    from engine.policy.api import analyze_policy
    from engine.policy.model import downgrade_reach

    failed = False
    report = []
    for f in files:
        a = analyze_policy(f, dry_run=dry_run)
        reach = ({r.name: list(downgrade_reach(a.policy, r)) for r in a.policy.routes}
                 if a.policy is not None and any(q.on_exceed == "downgrade" for q in a.policy.quotas) else None)
        # a dry run is for checking without the secrets: their absence does not fail --strict
        counted = [w for w in a.warnings if not (dry_run and w.code == "env-missing" and w.path.endswith("api_key"))]
        bad = bool(a.errors) or (strict and bool(counted)) or a.policy is None
        failed |= bad
        if fmt == "json":
            report.append({"file": f, "ok": not bad, "diagnostics": [
                {"code": d.code, "severity": d.severity, "message": d.message, "path": d.path,
                 "line": d.line, "col": d.col} for d in a.diagnostics],
                **({"downgrade_reach": reach} if reach is not None else {})})
            continue
        for d in a.diagnostics:
            click.echo(d.format())
        if not bad and a.policy is not None:
            p = a.policy
            extra = f", {len(a.warnings)} warning(s)" if a.warnings else ""
            click.echo(f"{f}: ok ({len(p.routes)} routes, {len(p.models)} models, {len(p.providers)} providers{extra})")
            for route, models in (reach or {}).items():
                click.echo(f"  downgrade from route {route!r} can reach: {', '.join(models) or 'nothing'}")
        else:
            click.echo(f"{f}: {len(a.errors)} error(s), {len(a.warnings)} warning(s)", err=True)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    raise SystemExit(1 if failed else 0)
