"""The policy language: load, validate, check and compile YAML routing policies."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import PolicyError
from engine.policy.build import build_policy
from engine.policy.check import check_policy
from engine.policy.compile import CompiledPolicy, compile_policy
from engine.policy.diagnostics import Diagnostic, sort_diagnostics
from engine.policy.load import LoadFailed, Located, load_yaml, read_policy_text
from engine.policy.model import Policy
from engine.policy.prices import catalogue_diagnostics
from engine.policy.schema import error_locations, validate_schema

__all__ = ["Analysis", "CompiledPolicy", "Diagnostic", "Policy", "analyze_policy", "analyze_text",
           "compile_policy", "load_policy", "load_policy_text"]


@dataclass(slots=True)
class Analysis:
    """Everything `engine validate` knows about one file."""

    source: str
    policy: Policy | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    located: Located | None = None

    @property
    def errors(self) -> list[Diagnostic]:
        """Diagnostics of severity error."""
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        """Diagnostics of severity warning."""
        return [d for d in self.diagnostics if d.severity == "warning"]


def analyze_text(text: str, source: str = "<policy>", env: Mapping[str, str] | None = None, *,
                 dry_run: bool = False) -> Analysis:
    """Load, validate, build and check a policy given as text; never raises for bad input.

    With `dry_run` (explain, test, replay: nothing is sent to a vendor) an unset variable
    used as an `api_key` is only a warning.
    """
    try:
        loc = load_yaml(text, source, env)
    except LoadFailed as e:
        return Analysis(source, None, sort_diagnostics(e.diagnostics))
    diags = validate_schema(loc)
    if not isinstance(loc.data, dict):
        return Analysis(source, None, sort_diagnostics(diags), loc)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if any(d.severity == "error" for d in diags):
        # Keep going on a repaired copy so one run reports reference and expression
        # mistakes too; the policy itself is still refused.
        repaired = _repair(loc.data)
        if repaired is None:
            return Analysis(source, None, sort_diagnostics(diags), loc)
        data, broken = repaired
        try:
            draft = build_policy(data, source=source, digest=digest)
        except (KeyError, TypeError, ValueError, AttributeError):
            return Analysis(source, None, sort_diagnostics(diags), loc)
        more = _env_diagnostics(loc, draft, dry_run) + check_policy(draft, loc)
        diags.extend(d for d in more if not _about_broken(d, broken))
        return Analysis(source, None, sort_diagnostics(diags), loc)
    policy = build_policy(loc.data, source=source, digest=digest)
    diags.extend(_env_diagnostics(loc, policy, dry_run))
    diags.extend(check_policy(policy, loc))
    diags.extend(catalogue_diagnostics(policy, loc))  # price: auto / context_window left to the catalogue
    return Analysis(source, policy, sort_diagnostics(diags), loc)


_ENTITIES = ("providers", "models", "signals")
_REQUIRED = ("adapter", "provider", "price")


def _repair(data: Any) -> tuple[dict[str, Any], set[str]] | None:
    """A copy of `data` without its schema-invalid parts, and the names of entities dropped."""
    if not isinstance(data, dict):
        return None
    d = copy.deepcopy(data)
    broken: set[str] = set()
    for path, keyword in sorted(error_locations(data), key=lambda e: -len(e[0])):
        if not path:
            if keyword == "required":
                return None
            continue
        if path[0] in _ENTITIES and len(path) >= 2 and (
                keyword == "required" or len(path) == 2 or (len(path) == 3 and path[2] in _REQUIRED)):
            section = d.get(path[0])
            if isinstance(section, dict):
                section.pop(path[1], None)  # type: ignore[arg-type]
                broken.add(str(path[1]))
            continue
        parent: Any = d
        for p in path[:-1]:
            try:
                parent = parent[p]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict):
            if keyword == "required":
                return None
            parent.pop(path[-1], None)
        elif isinstance(parent, list):
            return None
    for section in _ENTITIES:
        if section in d and not isinstance(d[section], dict):
            return None
    return d, broken


def _about_broken(d: Diagnostic, broken: set[str]) -> bool:
    """Whether `d` only repeats that a schema-invalid entity is missing."""
    return d.code in ("unknown-model", "unknown-provider", "expr", "unused-model") and any(
        repr(b) in d.message or f".{b}" in d.path for b in broken)


def _env_diagnostics(loc: Located, policy: Policy, dry_run: bool) -> list[Diagnostic]:
    """Missing `${VAR}`s: errors, except inside a provider no model uses (see docs/policy.md)."""
    used = {m.provider for m in policy.models.values()}
    out = []
    for path, names in loc.missing_env.items():
        var = ", ".join(names)
        unused_provider = len(path) >= 2 and path[0] == "providers" and path[1] not in used
        if dry_run and path[-1] == "api_key":
            out.append(loc.diag("env-missing", f"environment variable {var} is not set; fine for a dry run, "
                                "required to serve traffic", path, severity="warning"))
        elif unused_provider:
            out.append(loc.diag("env-missing", f"environment variable {var} is not set; provider {path[1]!r} "
                                "is not used by any model, so it is left unconfigured", path, severity="warning"))
        elif path[-1] == "api_key":
            # never suggest a default for a secret: a key written into the policy file leaks
            out.append(loc.diag("env-missing", f"environment variable {var} is not set (set it where the router "
                                "runs; to check a policy without its keys, as in CI, use `engine validate "
                                "--dry-run`)", path))
        else:
            out.append(loc.diag("env-missing", f"environment variable {var} is not set (set it, or write "
                                f"${{{names[0]}:-default}} to give a default)", path))
    return out


def analyze_policy(path: str | Path, env: Mapping[str, str] | None = None, *, dry_run: bool = False) -> Analysis:
    """`analyze_text` on a file, refusing oversized or unreadable files with a diagnostic."""
    try:
        text, name = read_policy_text(path)
    except LoadFailed as e:
        return Analysis(str(path), None, e.diagnostics)
    return analyze_text(text, name, env, dry_run=dry_run)


def load_policy(path: str | Path, *, env: Mapping[str, str] | None = None, strict: bool = False) -> Policy:
    """Load and check a policy file.

    Args:
        path: the YAML file.
        env: variables for `${VAR}` (default: the process environment).
        strict: treat warnings as errors.

    Raises:
        PolicyError: with every diagnostic, when the policy has errors (or warnings, if strict).
    """
    a = analyze_policy(path, env)
    return _accept(a, strict)


def load_policy_text(text: str, source: str = "<policy>", *, env: Mapping[str, str] | None = None,
                     strict: bool = False) -> Policy:
    """`load_policy` for a policy held in a string."""
    return _accept(analyze_text(text, source, env), strict)


def _accept(a: Analysis, strict: bool) -> Policy:
    if a.errors or (strict and a.warnings) or a.policy is None:
        raise PolicyError(a.diagnostics, a.source)
    return a.policy
