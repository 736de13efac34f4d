"""`engine validate`: every problem of every file, with file, line, column and JSON path."""

from __future__ import annotations

import json

import click


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty", show_default=True)
def validate_cmd(files: tuple[str, ...], strict: bool, fmt: str) -> None:
    """Check policy FILES: YAML, schema, references, expressions and static checks.

    Exit 0 when every file is valid, 1 when any has an error (or a warning, with --strict).
    """
    from engine.policy.api import analyze_policy

    failed = False
    report = []
    for f in files:
        a = analyze_policy(f)
        bad = bool(a.errors) or (strict and bool(a.warnings)) or a.policy is None
        failed |= bad
        if fmt == "json":
            report.append({"file": f, "ok": not bad, "diagnostics": [
                {"code": d.code, "severity": d.severity, "message": d.message, "path": d.path,
                 "line": d.line, "col": d.col} for d in a.diagnostics]})
            continue
        for d in a.diagnostics:
            click.echo(d.format())
        if not bad and a.policy is not None:
            p = a.policy
            extra = f", {len(a.warnings)} warning(s)" if a.warnings else ""
            click.echo(f"{f}: ok ({len(p.routes)} routes, {len(p.models)} models, {len(p.providers)} providers{extra})")
        else:
            click.echo(f"{f}: {len(a.errors)} error(s), {len(a.warnings)} warning(s)", err=True)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    raise SystemExit(1 if failed else 0)
