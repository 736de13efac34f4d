"""Diagnostics are data: a stable code, a severity, a position and a JSON path.

Tests assert codes, not wording; the CLI prints `FILE:LINE:COL: severity: message (at path)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One problem found in a policy file.

    Attributes:
        code: stable identifier such as `schema`, `unknown-model`, `shadowed-route`.
        severity: `error` (the policy is refused) or `warning` (refused only with --strict).
        message: what is wrong and, where possible, how to fix it.
        path: JSON path of the offending node, e.g. `$.routes[2].when`.
        file: the policy file.
        line: 1-based line, 0 when unknown.
        col: 1-based column, 0 when unknown.
    """

    code: str
    severity: Severity
    message: str
    path: str = "$"
    file: str = "<policy>"
    line: int = 0
    col: int = 0

    def format(self) -> str:
        """`FILE:LINE:COL: severity: message (at path)`."""
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message} (at {self.path})"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Order by position, then path and code, so output is stable."""
        return (self.file, self.line, self.col, self.path, self.code)


def sort_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by position, duplicates removed."""
    seen: set[Diagnostic] = set()
    out = []
    for d in sorted(diags, key=Diagnostic.sort_key):
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` for a close match among `choices`, else ``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def json_path(parts: Iterable[str | int]) -> str:
    """`$.routes[2].when` from `('routes', 2, 'when')`."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.isidentifier():
            out += f".{p}"
        else:
            out += f"[{p!r}]"
    return out
