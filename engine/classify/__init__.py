"""The built-in query-type classifier: cue tables (`cues`) and the scorer (`classifier`)."""

from __future__ import annotations

from engine.classify.classifier import LABELS, classify, scores

__all__ = ["LABELS", "classify", "scores"]
