"""Embedding-assisted classification: the cue classifier, with a linear model on the bundled
embedder's vectors as a second opinion where the cues are unsure.

The cues (`engine.classify.classifier`) decide alone when their best label leads the next by at
least `MARGIN` evidence points (most prompts: no embedding cost). Below that, the cue scores (as a
softmax at temperature 0.5) and the linear model's probabilities are mixed 0.7 / 0.3 and the best
label wins. The model is multinomial logistic regression trained by `python -m engine.classify.train`
on the labelled prompts in tests/data and shipped as `data/minilm-linear.json`; measured figures are
in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.classify.classifier import LABELS, scores

__all__ = ["MARGIN", "classify_assisted", "combine"]

MARGIN = 1.0
"""Cue lead below which the embedding model is consulted."""
_CUE_WEIGHT = 0.7
_TEMPERATURE = 0.5
_MODEL = Path(__file__).parent / "data" / "minilm-linear.json"
_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}


def combine(cue: Mapping[str, float], logits: Any) -> str:
    """The label from cue scores and the linear model's logits (see the module docstring)."""
    import numpy as np

    s = np.array([cue[label] for label in LABELS], dtype=np.float64) / _TEMPERATURE
    p_cue = np.exp(s - s.max())
    p_cue /= p_cue.sum()
    z = np.asarray(logits, dtype=np.float64)
    p_emb = np.exp(z - z.max())
    p_emb /= p_emb.sum()
    return LABELS[int(np.argmax(_CUE_WEIGHT * p_cue + (1 - _CUE_WEIGHT) * p_emb))]


def _model() -> tuple[Any, Any, Any]:
    with _LOCK:
        if not _LOADED:
            import numpy as np

            from engine.semantic.onnx import OnnxEmbedder

            data = json.loads(_MODEL.read_text(encoding="utf-8"))
            if data["embedder"] != OnnxEmbedder.name or tuple(data["labels"]) != LABELS:
                raise ValueError(f"{_MODEL}: trained for another embedder or label set; retrain it")
            _LOADED.update(w=np.asarray(data["weights"]), b=np.asarray(data["bias"]), emb=OnnxEmbedder())
        return _LOADED["w"], _LOADED["b"], _LOADED["emb"]


def classify_assisted(text: str) -> str:
    """The query type of `text`: the cues, with the embedding model's vote when they are unsure."""
    cue = scores(text)
    ranked = sorted(cue.values(), reverse=True)
    if ranked[0] - ranked[1] >= MARGIN:
        return max(LABELS, key=lambda label: cue[label])  # the cues are sure: no embedding
    w, b, emb = _model()
    return combine(cue, emb.embed([text])[0] @ w + b)
