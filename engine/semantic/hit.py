"""`SemanticHit`, kept apart so that the router can name it without loading the semantic layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SemanticHit"]


@dataclass(frozen=True, slots=True)
class SemanticHit:
    """A cached answer served for a paraphrase."""

    value: dict[str, Any]
    cost_usd: float
    """What the original upstream call cost (the hit saved it)."""
    similarity: float
