"""The assisted classifier: the cue classifier, with a trained n-gram model as a second opinion
where the cues are unsure. This is what `query_type` signals (`classify:` in a policy) use.

The cues (`engine.classify.classifier`) decide alone when their best label leads the next by at
least `MARGIN` evidence points (most prompts: no extra cost). Below that, the cue scores (as a
softmax at temperature `TEMPERATURE`) and the n-gram model's probabilities (`engine.classify.ngram`)
are mixed `CUE_WEIGHT` / 1 - `CUE_WEIGHT` and the best label wins. The constants were chosen on one
half of the blind set and checked on the other (benchmarks/RESULTS.md, "Assisted classifier").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from engine.classify.classifier import LABELS, TIE_ORDER, scores
from engine.classify.ngram import load

__all__ = ["CUE_WEIGHT", "MARGIN", "TEMPERATURE", "classify", "combine", "consults"]

MARGIN = 2.0
"""Cue lead below which the n-gram model is consulted."""
TEMPERATURE = 2.0
CUE_WEIGHT = 0.6


def consults(cue: Mapping[str, float]) -> bool:
    """True when the cues' lead is too small for them to decide alone."""
    first, second = sorted(cue.values(), reverse=True)[:2]
    return first - second < MARGIN


def combine(cue: Mapping[str, float], model: Sequence[float]) -> str:
    """The label from cue scores and the n-gram model's probabilities (see the module docstring)."""
    top = max(cue.values())
    e = {label: math.exp((cue[label] - top) / TEMPERATURE) for label in LABELS}
    total = sum(e.values())
    mixed = {label: CUE_WEIGHT * e[label] / total + (1 - CUE_WEIGHT) * p
             for label, p in zip(LABELS, model, strict=True)}
    return max(TIE_ORDER, key=lambda label: (mixed[label], -TIE_ORDER.index(label)))


def classify(text: str) -> str:
    """The query type of `text`: the cues, with the n-gram model's vote when they are unsure."""
    cue = scores(text)
    if not consults(cue):
        return max(TIE_ORDER, key=lambda label: (cue[label], -TIE_ORDER.index(label)))
    return combine(cue, load(labels=LABELS).probabilities(text))
