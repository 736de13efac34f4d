"""`engine test`: run policy test files and report like `opa test`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from engine.cli.common import resolve_policy


@click.command("test")
@click.argument("testfiles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", "-p", type=click.Path(dir_okay=False), default=None,
              help="Policy to test (default: each file's `policy:`, else $ENGINE_POLICY or the bundled default).")
@click.option("--explain", "explain_mode", type=click.Choice(["fails", "full", "none"]), default="fails",
              show_default=True, help="Which cases print their decision trace.")
@click.option("--verbose", "-v", is_flag=True, help="Also print passing cases.")
@click.option("--coverage", "show_coverage", is_flag=True,
              help="Report the routes, candidates, fallbacks and quotas no case exercised.")
@click.option("--threshold", type=click.FloatRange(0, 100), default=None, metavar="N",
              help="With --coverage: exit 1 when coverage is below N percent.")
def test_cmd(testfiles: tuple[str, ...], policy: str | None, explain_mode: str, verbose: bool,
             show_coverage: bool, threshold: float | None) -> None:
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

    if threshold is not None and not show_coverage:
        raise click.UsageError("--threshold needs --coverage")
    compiled_cache: dict[Path, Any] = {}
    results: list[tuple[str, Path, Any]] = []
    errors = 0
    for tf_path in testfiles:
        try:
            tf = load_test_file(tf_path)
        except TestFileError as e:
            click.echo(f"ERROR {e}")
            errors += 1
            continue
        ppath = Path(policy) if policy else (tf.policy or resolve_policy(None))
        if ppath not in compiled_cache:
            a = analyze_policy(ppath, dry_run=True)
            if a.errors or a.policy is None:
                for d in a.diagnostics:
                    click.echo(d.format())
                click.echo(f"ERROR {tf_path}: policy {ppath} is invalid")
                compiled_cache[ppath] = None
            else:
                compiled_cache[ppath] = compile_policy(a.policy)
        compiled = compiled_cache[ppath]
        if compiled is None:
            errors += len(tf.cases) or 1
            continue
        for case in tf.cases:
            r = run_case(compiled, case)
            results.append((tf_path, ppath, r))
            if r.outcome != "PASS" or verbose:
                click.echo(f"{r.outcome:<5} {tf_path}: {case.name}")
    failures = [(f, r) for f, _, r in results if r.outcome != "PASS"]
    if failures or explain_mode == "full":
        shown = failures if explain_mode != "full" else [(f, r) for f, _, r in results]
        _print_details(shown, bool(failures), explain_mode)
    below = _print_coverage(compiled_cache, results, threshold) if show_coverage else False
    passed = sum(1 for _, _, r in results if r.outcome == "PASS")
    total = len(results) + errors
    click.echo("-" * 80)
    click.echo(f"PASS: {passed}/{total}")
    if failures or errors:
        click.echo(f"FAIL: {len(failures) + errors}/{total}")
    raise SystemExit(1 if failures or errors or total == 0 or below else 0)


def _print_details(shown: list[tuple[str, Any]], failed: bool, explain_mode: str) -> None:
    """The FAILURES section: each mismatch as expected/actual, then the decision trace."""
    from engine.policy.testing import format_value

    click.echo("")
    click.echo("FAILURES" if failed else "TRACES")
    click.echo("-" * 80)
    for f, r in shown:
        click.echo(f"{r.outcome} {f}: {r.case.name}")
        if r.error:
            click.echo(f"  error: {r.error}")
        for key, want, got in r.mismatches:
            click.echo(f"  {key}:")
            click.echo(f"    - expected: {format_value(want)}")
            click.echo(f"    + actual:   {format_value(got)}")
        if r.decision is not None and explain_mode != "none":
            click.echo("  trace:")
            for t in r.decision.trace:
                click.echo(f"  | {t.format()}")
        click.echo("")


def _print_coverage(compiled_cache: dict[Path, Any], results: list[tuple[str, Path, Any]],
                    threshold: float | None) -> bool:
    """The COVERAGE section, per policy; True when some policy is below `threshold`."""
    from engine.policy.testing import coverage

    below = False
    click.echo("")
    click.echo("COVERAGE")
    click.echo("-" * 80)
    for ppath, compiled in compiled_cache.items():
        if compiled is None:
            continue
        cov = coverage(compiled, [r for _, p, r in results if p == ppath])
        kinds = "  ".join(f"{k}s {cov.percent(k):.0f}%" for k in cov.items)
        total = cov.percent()
        click.echo(f"{ppath}: {total:.1f}% ({kinds})")
        for kind, label in cov.missed():
            click.echo(f"  not exercised: {kind} {label}")
        if threshold is not None and total < threshold:
            click.echo(f"  coverage {total:.1f}% is below the threshold {threshold:g}%")
            below = True
    return below
