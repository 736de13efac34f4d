"""The built-in query-type classifier: cue tables (`cues`), the cue scorer (`classifier`), and the
trained n-gram second opinion (`ngram`) that `assisted` consults where the cues are unsure.

`classify` is the assisted classifier, the one `classify:` signals in a policy use; `classify_cues`
is the cue classifier alone.
"""

from __future__ import annotations

from engine.classify.assisted import classify
from engine.classify.classifier import LABELS, scores
from engine.classify.classifier import classify as classify_cues

__all__ = ["LABELS", "classify", "classify_cues", "scores"]
