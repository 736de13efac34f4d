"""The assisted classifier (cues + the trained n-gram model): accuracy floors, held out and in-sample."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from engine.classify import LABELS, classify, classify_cues, scores
from engine.classify.assisted import MARGIN, combine, consults
from engine.classify.ngram import MODEL_PATH, features, load

DATA = Path(__file__).parent / "data"
# Measured when written (benchmarks/RESULTS.md, "Assisted classifier"): held out, trained on dev + extra
# and scored on the blind set, 94.2% assisted vs 91.2% cues; 5-fold cross-validation over all three sets
# 99.x%. The floors fail on a real regression without pinning single prompts.
HELD_OUT_FLOOR = 0.90
DEV_FLOOR = 0.94
LANGUAGE_FLOOR = 0.90


def _rows(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_combine_follows_a_confident_model_when_the_cues_tie() -> None:
    cue = dict.fromkeys(LABELS, 1.0)
    probs = [0.9 if label == "math" else 0.1 / 7 for label in LABELS]
    assert consults(cue)
    assert combine(cue, probs) == "math"


def test_sure_cues_decide_alone() -> None:
    text = "Translate into French: 'the meeting moved to Thursday'"
    s = sorted(scores(text).values(), reverse=True)
    assert s[0] - s[1] >= MARGIN
    assert not consults(scores(text))
    assert classify(text) == classify_cues(text) == "translate"


def test_shipped_model_matches_the_labels_and_scores_a_probability_per_label() -> None:
    model = load(labels=LABELS)
    assert model.labels == LABELS and len(model.weights) > 1000
    p = model.probabilities("give me the gist of this in two sentences: the board met on Tuesday.")
    assert len(p) == len(LABELS) and math.isclose(sum(p), 1.0)
    dev = _rows("query-types-dev.jsonl")  # in-sample for the shipped model: it must have learnt it
    alone = sum(LABELS[(q := model.probabilities(r["prompt"])).index(max(q))] == r["type"] for r in dev)
    assert alone / len(dev) >= 0.9
    assert model.probabilities("") == model.probabilities("")  # no features: the bias alone, no error


def test_features_see_words_pairs_characters_and_structure() -> None:
    f = features("Fix this:\n\n```py\nx=1\n```")
    assert {"w:fix", "b:fix_this", "c3:fix", "s:fence", "s:para", "s:short"} <= f


def test_round_trip_of_the_shipped_form(tmp_path: Path) -> None:
    model = load(labels=LABELS)
    path = tmp_path / "m.json"
    path.write_text(model.to_json(), encoding="utf-8")
    again = load(path, labels=LABELS)
    text = "Wie viele Liter passen in einen Würfel mit 2 m Kantenlänge?"
    assert again.probabilities(text) == pytest.approx(model.probabilities(text), abs=1e-9)
    with pytest.raises(ValueError, match="retrain"):
        load(path, labels=tuple(reversed(LABELS)))


def test_assisted_accuracy_on_the_dev_set_overall_and_per_language() -> None:
    rows = _rows("query-types-dev.jsonl")
    right = sum(classify(r["prompt"]) == r["type"] for r in rows)
    assert right / len(rows) >= DEV_FLOOR
    # languages: pooled over the two sets that label them, as the blind set alone has 9-10 prompts per language
    pooled = _rows("classify_extra.jsonl") + _rows("classify_blind.jsonl")
    ok: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for r in pooled:
        total[r["lang"]] += 1
        ok[r["lang"]] += classify(r["prompt"]) == r["type"]
    low = {lang: f"{ok[lang]}/{n}" for lang, n in total.items() if ok[lang] / n < LANGUAGE_FLOOR}
    assert not low, f"languages below {LANGUAGE_FLOOR:.0%}: {low}"


def test_held_out_the_blind_set_still_gains_over_the_cues() -> None:
    """Train on the dev and extra sets only (fewer epochs, to stay quick) and score the unseen blind set."""
    pytest.importorskip("numpy", reason="SKIPPED LOUDLY: training needs numpy (pip install '.[semantic]')")
    from engine.classify.assisted import combine as mix
    from engine.classify.train import fit

    seen = _rows("query-types-dev.jsonl") + _rows("classify_extra.jsonl")
    model = fit([r["prompt"] for r in seen], [r["type"] for r in seen], epochs=150, lr=8.0)
    blind = _rows("classify_blind.jsonl")
    cue_right = assisted_right = 0
    for r in blind:
        s = scores(r["prompt"])
        cue_right += classify_cues(r["prompt"]) == r["type"]
        label = mix(s, model.probabilities(r["prompt"])) if consults(s) else classify_cues(r["prompt"])
        assisted_right += label == r["type"]
    assert assisted_right / len(blind) >= HELD_OUT_FLOOR
    assert assisted_right > cue_right, (assisted_right, cue_right)


def test_model_file_is_data_not_code() -> None:
    head = MODEL_PATH.read_text(encoding="utf-8")[:200]
    assert head.startswith('{"labels":')


def test_the_model_is_warmed_off_the_request_path(tmp_path: Path) -> None:
    from engine.classify import ngram

    path = tmp_path / "copy.json"
    path.write_bytes(MODEL_PATH.read_bytes())
    t = ngram.warm(path)
    assert t is not None and t.name == "ngram-warm"
    t.join(timeout=60)
    assert path in ngram._LOADED
    assert ngram.warm(path) is None  # loaded: nothing to do
