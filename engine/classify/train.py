"""Train the n-gram second opinion of the assisted classifier and measure it, honestly.

    python -m engine.classify.train [--folds 5] [--out engine/classify/data/ngram-linear.json] [--no-write]

Reads the labelled prompts in tests/data: the shared dev set (query-types-dev.jsonl), the project's
extra batches (classify_extra.jsonl) and a blind set written without sight of either or of the cue
tables (classify_blind.jsonl). Prints, overall, per set, per label and per language:

- k-fold cross-validation (stratified by label) over all three sets: the n-gram model alone, the cue
  classifier, and the two combined as `engine.classify.assisted` combines them;
- the blind set held out: the model trained on the dev and extra sets only, scored on the blind set;

then trains on everything and writes the model (`engine.classify.ngram`). numpy is needed here only
(the semantic extra has it); scoring at run time is pure Python.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.classify.classifier import LABELS, scores
from engine.classify.ngram import MODEL_PATH, NgramModel, features

ROOT = Path(__file__).resolve().parents[2]
DATA = {"dev": ROOT / "tests" / "data" / "query-types-dev.jsonl",
        "extra": ROOT / "tests" / "data" / "classify_extra.jsonl",
        "blind": ROOT / "tests" / "data" / "classify_blind.jsonl"}
MIN_COUNT = 2  # a feature seen in one training prompt only is that prompt's phrasing, not a signal
PRUNE = 0.0015  # rows whose largest weight is below this round to nothing in the shipped form


def load_rows(sets: Sequence[str] = tuple(DATA)) -> list[dict[str, Any]]:
    """The labelled prompts of `sets`, each row tagged with its set."""
    rows = []
    for name in sets:
        for line in DATA[name].read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append({**json.loads(line), "set": name})
    return rows


def fit(texts: Sequence[str], labels: Sequence[str], *, l2: float = 1e-4, epochs: int = 300,
        lr: float = 5.0) -> NgramModel:
    """Multinomial logistic regression on L2-normalised presence features, by full-batch gradient descent."""
    feats = [features(t) for t in texts]
    df = Counter(f for fs in feats for f in fs)
    vocab = {f: i for i, f in enumerate(sorted(f for f, n in df.items() if n >= MIN_COUNT))}
    x = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for i, fs in enumerate(feats):
        cols = [vocab[f] for f in fs if f in vocab]
        if cols:
            x[i, cols] = 1.0 / np.sqrt(len(cols))
    y = np.array([LABELS.index(label) for label in labels])
    onehot = np.eye(len(LABELS), dtype=np.float32)[y]
    w = np.zeros((len(vocab), len(LABELS)), dtype=np.float32)
    b = np.zeros(len(LABELS), dtype=np.float32)
    for _ in range(epochs):
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(y)
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum(0)
    names = sorted(vocab, key=vocab.__getitem__)
    keep = {f: w[i] for i, f in enumerate(names) if float(np.abs(w[i]).max()) >= PRUNE}
    return NgramModel.of(LABELS, b, keep)


def folds(labels: Sequence[str], k: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """A fold number per row, stratified by label."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=np.int64)
    y = np.array(labels)
    for label in LABELS:
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        out[members] = np.arange(len(members)) % k
    return out


def lang(row: dict[str, Any]) -> str:
    """The row's language: labelled in the extra and blind sets, guessed by script in the dev set."""
    if row.get("lang"):
        return str(row["lang"])
    text = row["prompt"]
    if any("\u3040" <= ch <= "\u30ff" for ch in text):
        return "ja"
    if any("\u4e00" <= ch <= "\u9fff" for ch in text):
        return "zh"
    return "latin"  # the dev set does not label languages; Latin-script prompts are counted together


def table(rows: Sequence[dict[str, Any]], columns: dict[str, Sequence[str]]) -> list[str]:
    """Markdown rows: accuracy of each column's predictions overall, per set, label and language."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0] * (len(columns) + 1))
    for j, r in enumerate(rows):
        for group in ("all", f"set={r['set']}", f"label={r['type']}", f"lang={lang(r)}"):
            cell = acc[group]
            for c, preds in enumerate(columns.values()):
                cell[c] += int(preds[j] == r["type"])
            cell[-1] += 1
    order = sorted(acc, key=lambda g: (("all", "set", "label", "lang").index(g.split("=")[0]), g))
    lines = ["| group | n | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for g in order:
        *hits, n = acc[g]
        lines.append(f"| {g} | {n} | " + " | ".join(f"{h / n:.1%}" for h in hits) + " |")
    return lines


def predictions(rows: Sequence[dict[str, Any]], model: NgramModel,
                combine: Callable[[dict[str, float], list[float]], str]) -> tuple[list[str], list[str]]:
    """(n-gram alone, combined) labels for `rows` under `model`."""
    alone, both = [], []
    for r in rows:
        p = model.probabilities(r["prompt"])
        alone.append(LABELS[int(np.argmax(p))])
        both.append(combine(scores(r["prompt"]), p))
    return alone, both


def report(k: int = 5) -> tuple[str, NgramModel]:
    """The cross-validation and held-out tables as Markdown, and the model trained on every set."""
    from engine.classify.assisted import combine
    from engine.classify.classifier import classify

    rows = load_rows()
    cue = [classify(r["prompt"]) for r in rows]
    fold = folds([r["type"] for r in rows], k)
    alone: list[str] = [""] * len(rows)
    both: list[str] = [""] * len(rows)
    for part in range(k):
        train = [r for r, f in zip(rows, fold, strict=True) if f != part]
        test = [i for i, f in enumerate(fold) if f == part]
        model = fit([r["prompt"] for r in train], [r["type"] for r in train])
        a, c = predictions([rows[i] for i in test], model, combine)
        for i, ai, ci in zip(test, a, c, strict=True):
            alone[i], both[i] = ai, ci
    out = [f"### {k}-fold cross-validation over {len(rows)} prompts (dev, extra, blind; stratified by label)", ""]
    out += table(rows, {"n-gram model alone": alone, "cues": cue, "cues + n-gram (assisted)": both})

    seen = [r for r in rows if r["set"] != "blind"]
    blind = [r for r in rows if r["set"] == "blind"]
    model = fit([r["prompt"] for r in seen], [r["type"] for r in seen])
    a, c = predictions(blind, model, combine)
    out += ["", f"### Blind set held out: trained on the {len(seen)} dev and extra prompts, "
            f"scored on its {len(blind)}", ""]
    out += table(blind, {"n-gram model alone": a, "cues": [classify(r["prompt"]) for r in blind],
                         "cues + n-gram (assisted)": c})
    return "\n".join(out), fit([r["prompt"] for r in rows], [r["type"] for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="measure only; keep the shipped model")
    args = ap.parse_args()
    text, final = report(args.folds)
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(final.to_json(), encoding="utf-8")
        print(f"\nwrote {args.out} ({len(final.weights):,} features, {args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
