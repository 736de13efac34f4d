"""Files shipped with the engine: the policy schema and the ready policies.

In a wheel they live inside the package (`engine/_schemas`, `engine/_policies`); in a source
checkout or an editable install they are the top-level `schemas/` and `policies/` folders.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent  # the `engine` package


def _first(*candidates: Path) -> Path:
    for c in candidates:
        if c.exists():
            return c
    return candidates[-1]


def schemas_dir() -> Path:
    """Folder holding `policy.schema.json`."""
    return _first(_PKG / "_schemas", _PKG.parent / "schemas")


def policies_dir() -> Path:
    """Folder holding `default.yaml`, `production.example.yaml` and `tests/`."""
    return _first(_PKG / "_policies", _PKG.parent / "policies")


def default_policy_path() -> Path:
    """The offline default policy (simulated providers)."""
    return policies_dir() / "default.yaml"
