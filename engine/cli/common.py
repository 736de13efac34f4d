"""Helpers shared by commands: resolving the policy, parsing --meta, reporting errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.policy.bundled import default_policy_path

POLICY_HELP = "Policy file (default: $ENGINE_POLICY, else the bundled offline default)."

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3

T = TypeVar("T")


def policy_option(f: Any) -> Any:
    """`--policy/-p FILE`, falling back to $ENGINE_POLICY and the bundled default."""
    return click.option("--policy", "-p", "policy", type=click.Path(dir_okay=False), default=None,
                        help=POLICY_HELP)(f)


def resolve_policy(path: str | None) -> Path:
    """The policy file to use."""
    if path:
        return Path(path)
    env = os.environ.get("ENGINE_POLICY")
    return Path(env) if env else default_policy_path()


def parse_meta(items: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` pairs; values that read as JSON numbers, booleans or null get that type."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--meta")
        value: Any = raw
        if raw in ("true", "false", "null") or raw.lstrip("-").replace(".", "", 1).isdigit():
            value = json.loads(raw)
        out[key] = value
    return out


def load_compiled_or_exit(path: Path) -> Any:
    """Load and compile a policy, or print its diagnostics and exit 1."""
    from engine.policy.api import analyze_policy, compile_policy

    a = analyze_policy(path, dry_run=True)
    if a.errors or a.policy is None:
        for d in a.diagnostics:
            click.echo(d.format(), err=True)
        raise SystemExit(EXIT_INVALID)
    return compile_policy(a.policy)


def loaded_or_exit(path: str | Path, load: Callable[[Path], T]) -> T:
    """`load(path)`, or exit 1 after printing the policy's diagnostics (file:line:col, JSON path)
    or why the file cannot be read."""
    from engine.errors import PolicyError

    try:
        return load(Path(path))
    except PolicyError as e:
        click.echo(e.report(), err=True)
        raise SystemExit(EXIT_INVALID) from None
    except OSError as e:
        click.echo(f"error: cannot read the policy {path}: {e}", err=True)
        raise SystemExit(EXIT_INVALID) from None
