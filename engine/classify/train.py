"""Train the embedding side of the assisted classifier and measure it with cross-validation.

    python -m engine.classify.train [--out engine/classify/data/minilm-linear.json] [--folds 5]

Reads the labelled prompts in tests/data (query-types-dev.jsonl, classify_extra.jsonl), embeds them
with the bundled embedder, fits a multinomial logistic regression (numpy, L2), prints k-fold
accuracy of the embedding model alone, of the cue classifier, and of the gated combination
(`engine.classify.assisted`), overall, per label and per language, then writes the weights as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from engine.classify.classifier import LABELS, scores

ROOT = Path(__file__).resolve().parents[2]
DATA = (ROOT / "tests" / "data" / "query-types-dev.jsonl", ROOT / "tests" / "data" / "classify_extra.jsonl")
OUT = Path(__file__).parent / "data" / "minilm-linear.json"


def fit(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-4, epochs: int = 500, lr: float = 2.0) -> tuple[Any, Any]:
    """Multinomial logistic regression by full-batch gradient descent."""
    w = np.zeros((x.shape[1], len(LABELS)))
    b = np.zeros(len(LABELS))
    onehot = np.eye(len(LABELS))[y]
    for _ in range(epochs):
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(y)
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return w, b


def _lang(row: dict[str, Any]) -> str:
    if row.get("lang"):
        return str(row["lang"])
    text = row["prompt"]
    if any("\u3040" <= ch <= "\u30ff" for ch in text):
        return "ja"
    if any("\u4e00" <= ch <= "\u9fff" for ch in text):
        return "zh"
    return "en*"  # the dev set does not label languages; Latin-script prompts are counted together


def main() -> None:
    from engine.classify.assisted import combine
    from engine.semantic.onnx import OnnxEmbedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    rows = [json.loads(line) for p in DATA for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    x = OnnxEmbedder().embed([r["prompt"] for r in rows]).astype(np.float64)
    y = np.array([LABELS.index(r["type"]) for r in rows])
    cue = np.array([[scores(r["prompt"])[label] for label in LABELS] for r in rows])
    rng = np.random.default_rng(0)
    fold = np.zeros(len(y), dtype=int)
    for c in range(len(LABELS)):
        members = np.flatnonzero(y == c)
        rng.shuffle(members)
        fold[members] = np.arange(len(members)) % args.folds
    emb_pred = np.zeros(len(y), dtype=int)
    comb_pred = np.zeros(len(y), dtype=int)
    for k in range(args.folds):
        test = fold == k
        w, b = fit(x[~test], y[~test])
        for i in np.flatnonzero(test):
            logits = x[i] @ w + b
            emb_pred[i] = int(np.argmax(logits))
            comb_pred[i] = LABELS.index(combine(dict(zip(LABELS, cue[i], strict=True)), logits))
    cue_pred = np.argmax(cue, 1)
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
    for j, r in enumerate(rows):
        origin = "dev" if r["id"].startswith("A") else "extra"
        for group in ("all", f"label={r['type']}", f"lang={_lang(r)}", f"set={origin}"):
            acc = table[group.split("=")[0]][group]
            acc[0] += int(emb_pred[j] == y[j])
            acc[1] += int(cue_pred[j] == y[j])
            acc[2] += int(comb_pred[j] == y[j])
            acc[3] += 1
    print(f"{len(rows)} prompts, {args.folds}-fold cross-validation of the embedding model")
    print("| group | n | embedding model alone | cues | cues + embedding (gated) |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("all", "set", "label", "lang"):
        for group, (e, c, m, n) in sorted(table[kind].items()):
            print(f"| {group} | {n} | {e / n:.1%} | {c / n:.1%} | {m / n:.1%} |")
    w, b = fit(x, y)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"embedder": OnnxEmbedder.name, "labels": list(LABELS),
                                    "weights": np.round(w, 5).tolist(), "bias": np.round(b, 5).tolist()}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
