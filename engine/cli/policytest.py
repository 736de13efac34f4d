"""`engine test`: run policy test files and report like `opa test`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.cli.common import resolve_policy


def _fmt(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True) if not isinstance(v, str) else repr(v)


@click.command("test")
@click.argument("testfiles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", "-p", type=click.Path(dir_okay=False), default=None,
              help="Policy to test (default: each file's `policy:`, else $ENGINE_POLICY or the bundled default).")
@click.option("--explain", "explain_mode", type=click.Choice(["fails", "full", "none"]), default="fails",
              show_default=True, help="Which cases print their decision trace.")
@click.option("--verbose", "-v", is_flag=True, help="Also print passing cases.")
def test_cmd(testfiles: tuple[str, ...], policy: str | None, explain_mode: str, verbose: bool) -> None:
    """Run policy tests in TESTFILES; exit 1 if any case fails or errors.

    \b
    A test file:
      policy: ../default.yaml        # relative to the test file; optional
      cases:
        - name: premium code goes to sonnet
          request: {prompt: "Fix this Python: def f(: pass", meta: {tier: premium}}
          expect: {route: premium-code, model: claude-sonnet}
    """
    from engine.policy.api import analyze_policy, compile_policy
    from engine.policy.testing import TestFileError, load_test_file, run_case

    compiled_cache: dict[Path, Any] = {}
    results = []
    errors = 0
    for tf_path in testfiles:
        try:
            tf = load_test_file(tf_path)
        except TestFileError as e:
            click.echo(f"ERROR {e}", err=True)
            errors += 1
            continue
        ppath = Path(policy) if policy else (tf.policy or resolve_policy(None))
        if ppath not in compiled_cache:
            a = analyze_policy(ppath, dry_run=True)
            if a.errors or a.policy is None:
                for d in a.diagnostics:
                    click.echo(d.format(), err=True)
                click.echo(f"ERROR {tf_path}: policy {ppath} is invalid", err=True)
                compiled_cache[ppath] = None
            else:
                compiled_cache[ppath] = compile_policy(a.policy)
        compiled = compiled_cache[ppath]
        if compiled is None:
            errors += len(tf.cases) or 1
            continue
        for case in tf.cases:
            r = run_case(compiled, case)
            results.append((tf_path, r))
            if r.outcome != "PASS" or verbose:
                click.echo(f"{r.outcome:<5} {tf_path}: {case.name}")
    failures = [(f, r) for f, r in results if r.outcome != "PASS"]
    if failures or explain_mode == "full":
        _print_details(failures if explain_mode != "full" else results, bool(failures), explain_mode)
    passed = sum(1 for _, r in results if r.outcome == "PASS")
    total = len(results) + errors
    click.echo("-" * 80)
    click.echo(f"PASS: {passed}/{total}")
    if failures or errors:
        click.echo(f"FAIL: {len(failures) + errors}/{total}")
    raise SystemExit(1 if failures or errors or total == 0 else 0)


def _print_details(shown: list[tuple[str, Any]], failed: bool, explain_mode: str) -> None:
    """The FAILURES section: each mismatch as expected/actual, then the decision trace."""
    click.echo("")
    click.echo("FAILURES" if failed else "TRACES")
    click.echo("-" * 80)
    for f, r in shown:
        click.echo(f"{r.outcome} {f}: {r.case.name}")
        if r.error:
            click.echo(f"  error: {r.error}")
        for key, want, got in r.mismatches:
            click.echo(f"  {key}:")
            click.echo(f"    - expected: {_fmt(want)}")
            click.echo(f"    + actual:   {_fmt(got)}")
        if r.decision is not None and explain_mode != "none":
            click.echo("  trace:")
            for t in r.decision.trace:
                click.echo(f"  | {t.format()}")
        click.echo("")
