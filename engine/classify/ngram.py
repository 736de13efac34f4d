"""A linear model over the words and character n-grams of a prompt: the cue classifier's second opinion.

The cue tables (`engine.classify.classifier`) know what each label's requests usually say; they are
brittle where a prompt says it in words they do not list ("what was decided in this thread?", a
request in a language they cover thinly). A multinomial logistic regression over *presence* features
(lower-cased words, word pairs, character 3- and 4-grams of the first `HEAD` characters, a few
structure flags) fills those gaps: it was trained at build time by `python -m engine.classify.train`
on the labelled prompts in tests/data and ships as data (`data/ngram-linear.json`, weights as
integers in thousandths). Pure Python, no numpy: scoring is one set of features and a column sum.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HEAD", "MODEL_PATH", "NgramModel", "digest", "features", "load", "warm"]

HEAD = 1500
"""Characters of the prompt the features read: enough to hold the request and a look at its material."""
MODEL_PATH = Path(__file__).parent / "data" / "ngram-linear.json"
_TOKEN = re.compile(r"\w+|[^\w\s]")
_SPACE = re.compile(r"\s+")
_LOCK = threading.Lock()
_LOADED: dict[Path, NgramModel] = {}
_DIGESTS: dict[Path, str] = {}


def features(text: str) -> set[str]:
    """The presence features of one prompt (the same function trains and scores the model)."""
    head = text[:HEAD].lower()
    toks = _TOKEN.findall(head)
    out = {"w:" + t for t in toks}
    out.update("b:" + a + "_" + b for a, b in zip(toks, toks[1:], strict=False))
    s = " " + _SPACE.sub(" ", head) + " "
    out.update("c3:" + s[i:i + 3] for i in range(len(s) - 2))
    out.update("c4:" + s[i:i + 4] for i in range(len(s) - 3))
    # structure a word list cannot see: fenced code, a passage, the prompt's size
    if "```" in text:
        out.add("s:fence")
    if "\n\n" in text:
        out.add("s:para")
    n = len(text)
    out.add("s:short" if n < 60 else "s:long" if n > 1200 else "s:medium" if n > 400 else "s:small")
    return out


@dataclass(frozen=True, slots=True)
class NgramModel:
    """Weights of the linear model: one row of per-label weights for each known feature."""

    labels: tuple[str, ...]
    bias: tuple[float, ...]
    weights: dict[str, tuple[float, ...]]

    def logits(self, text: str) -> list[float]:
        """Per-label scores (before softmax) in `labels` order."""
        rows = [w for f in features(text) if (w := self.weights.get(f)) is not None]
        if not rows:
            return list(self.bias)
        scale = 1.0 / math.sqrt(len(rows))  # features are L2-normalised in training
        return [b + s * scale for b, s in zip(self.bias, map(math.fsum, zip(*rows, strict=True)), strict=True)]

    def probabilities(self, text: str) -> list[float]:
        """Softmax of `logits`: one probability per label."""
        z = self.logits(text)
        top = max(z)
        e = [math.exp(v - top) for v in z]
        total = sum(e)
        return [v / total for v in e]

    def to_json(self) -> str:
        """The shipped data form: weights in integer thousandths, sorted for stable diffs."""
        rows = {f: [round(v * 1000) for v in w] for f, w in sorted(self.weights.items())}
        return json.dumps({"labels": list(self.labels), "bias": [round(v, 5) for v in self.bias],
                           "scale": 1000, "weights": rows}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def of(cls, labels: Sequence[str], bias: Iterable[float], weights: dict[str, Sequence[float]]) -> NgramModel:
        """A model from trained arrays (rows rounded like the shipped form, so both score alike)."""
        return cls(tuple(labels), tuple(float(b) for b in bias),
                   {f: tuple(round(float(v) * 1000) / 1000 for v in w) for f, w in weights.items()})


def load(path: Path = MODEL_PATH, *, labels: Sequence[str] | None = None) -> NgramModel:
    """The model shipped at `path`, read once per process.

    Raises:
        ValueError: the file is not a model for `labels` (retrain with `python -m engine.classify.train`).
    """
    with _LOCK:
        model = _LOADED.get(path)
        if model is None:
            raw = path.read_bytes()
            data = json.loads(raw)
            scale = float(data["scale"])
            model = NgramModel(tuple(data["labels"]), tuple(float(b) for b in data["bias"]),
                               {f: tuple(v / scale for v in w) for f, w in data["weights"].items()})
            _LOADED[path] = model
            _DIGESTS[path] = hashlib.sha256(raw).hexdigest()[:12]
    if labels is not None and model.labels != tuple(labels):
        raise ValueError(f"{path}: trained for labels {list(model.labels)}, not {list(labels)}; retrain it")
    return model



def warm(path: Path = MODEL_PATH) -> threading.Thread | None:
    """Read the model in a daemon thread (~0.1 s of JSON), so the first prompt the cues are unsure
    of does not pay for it on the event loop; None when it is loaded already."""
    if path in _LOADED:
        return None
    t = threading.Thread(target=load, args=(path,), name="ngram-warm", daemon=True)
    t.start()
    return t


def digest(path: Path = MODEL_PATH) -> str:
    """Short sha256 of the loaded model file (shown in explain traces and benchmark reports)."""
    load(path)
    return _DIGESTS[path]
