"""Calibrating the semantic cache on labelled pairs: false hits and paraphrase reuse per threshold.

A pair is `{a, b, same, kind?, lang?, type?}`: `same: true` means a correct answer to `a` is a
fully correct answer to `b` (a hit is right), `same: false` that a hit serves a wrong answer.
For each threshold, a pair *hits* when the cosine of its two prompts clears the threshold and
every guard passes, exactly as a lookup decides. The chosen threshold is the one whose false-hit
rate (false pairs that hit / false pairs) meets the target with the most reuse (true pairs that
hit / true pairs); ties go to the higher threshold. Thresholds below `min_threshold` are never
chosen: labelled pairs hold near misses, not unrelated prompts, and a cache must still tell
those apart by similarity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.semantic.embedders import EmbedderError
from engine.semantic.guards import check, facts

if TYPE_CHECKING:
    from engine.semantic.embedders import Embedder

__all__ = ["Calibration", "Pair", "Row", "calibrate", "load_pairs", "score_pairs"]


@dataclass(frozen=True, slots=True)
class Pair:
    """One labelled pair."""

    a: str
    b: str
    same: bool
    kind: str = ""
    lang: str = ""
    type: str = ""


@dataclass(frozen=True, slots=True)
class Scored:
    """A pair with its cosine and the guard verdict."""

    pair: Pair
    similarity: float
    refused_by: str | None


@dataclass(frozen=True, slots=True)
class Row:
    """Figures at one threshold."""

    threshold: float
    reuse: float
    """Share of true pairs that hit."""
    false_hit_rate: float
    """Share of false pairs that hit."""
    true_hits: int
    false_hits: int


@dataclass(frozen=True, slots=True)
class Calibration:
    """The sweep and the chosen threshold (None when no threshold meets the target)."""

    rows: tuple[Row, ...]
    chosen: Row | None
    target: float
    n_true: int
    n_false: int
    groups: dict[str, dict[str, tuple[int, int, int, int]]] = field(default_factory=dict)
    """At the chosen threshold, per grouping (kind, lang, type): value -> (true hits, trues, false hits, falses)."""


def load_pairs(path: str | Path) -> list[Pair]:
    """Read a JSON Lines file of pairs.

    Raises:
        EmbedderError: a line is not valid JSON or lacks `a`, `b` or a boolean `same` (names the line).
    """
    pairs: list[Pair] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise EmbedderError(f"{path}:{n}: not JSON: {e.msg}") from None
        if not isinstance(d, dict) or not isinstance(d.get("a"), str) or not isinstance(d.get("b"), str) \
                or not isinstance(d.get("same"), bool):
            raise EmbedderError(f"{path}:{n}: a pair needs string fields 'a' and 'b' and a boolean 'same'")
        pairs.append(Pair(d["a"], d["b"], d["same"], str(d.get("kind", "")), str(d.get("lang", "")),
                          str(d.get("type", ""))))
    if not pairs:
        raise EmbedderError(f"{path}: no pairs")
    return pairs


def score_pairs(pairs: Sequence[Pair], embedder: Embedder) -> list[Scored]:
    """Embed every prompt once and run the guards on each pair."""
    vectors = embedder.embed([p.a for p in pairs] + [p.b for p in pairs])
    n = len(pairs)
    return [Scored(p, float(vectors[i] @ vectors[n + i]), check(facts(p.a), facts(p.b))) for i, p in enumerate(pairs)]


def _hits(scored: Sequence[Scored], threshold: float) -> list[bool]:
    return [s.refused_by is None and s.similarity >= threshold for s in scored]


def sweep(scored: Sequence[Scored], thresholds: Sequence[float]) -> list[Row]:
    """Figures at every threshold."""
    trues = [s for s in scored if s.pair.same]
    falses = [s for s in scored if not s.pair.same]
    rows = []
    for t in thresholds:
        th, fh = sum(_hits(trues, t)), sum(_hits(falses, t))
        rows.append(Row(t, th / len(trues) if trues else 0.0, fh / len(falses) if falses else 0.0, th, fh))
    return rows


def calibrate(scored: Sequence[Scored], *, max_false_hit_rate: float = 0.01, min_threshold: float = 0.75,
              step: float = 0.01) -> Calibration:
    """Sweep thresholds from `min_threshold` to 0.99 and pick one (see the module docstring)."""
    count = int(round((0.99 - min_threshold) / step)) + 1
    thresholds = [round(min_threshold + i * step, 4) for i in range(max(1, count))]
    rows = sweep(scored, thresholds)
    ok = [r for r in rows if r.false_hit_rate <= max_false_hit_rate]
    chosen = max(ok, key=lambda r: (r.reuse, r.threshold)) if ok else None
    groups: dict[str, dict[str, tuple[int, int, int, int]]] = {}
    if chosen is not None:
        hits = _hits(scored, chosen.threshold)
        for attr in ("kind", "lang", "type"):
            per: dict[str, list[int]] = {}
            for s, h in zip(scored, hits, strict=True):
                value = getattr(s.pair, attr)
                if not value:
                    continue
                acc = per.setdefault(value, [0, 0, 0, 0])
                if s.pair.same:
                    acc[0] += h
                    acc[1] += 1
                else:
                    acc[2] += h
                    acc[3] += 1
            if per:
                groups[attr] = {k: (v[0], v[1], v[2], v[3]) for k, v in sorted(per.items())}
    return Calibration(tuple(rows), chosen, max_false_hit_rate, sum(s.pair.same for s in scored),
                       sum(not s.pair.same for s in scored), groups)


def cross_validate(scored: Sequence[Scored], *, max_false_hit_rate: float = 0.01, min_threshold: float = 0.75,
                   folds: int = 2) -> list[tuple[float | None, Row | None]]:
    """Calibrate on all folds but one, measure on the held-out one; returns (threshold, held-out row) per fold.

    Pairs are dealt to folds round-robin within each label, so every fold holds both labels.
    """
    parts: list[list[Scored]] = [[] for _ in range(folds)]
    for label in (True, False):
        for i, s in enumerate(x for x in scored if x.pair.same is label):
            parts[i % folds].append(s)
    out: list[tuple[float | None, Row | None]] = []
    for k in range(folds):
        train = [s for j, p in enumerate(parts) if j != k for s in p]
        cal = calibrate(train, max_false_hit_rate=max_false_hit_rate, min_threshold=min_threshold)
        if cal.chosen is None:
            out.append((None, None))
            continue
        out.append((cal.chosen.threshold, sweep(parts[k], [cal.chosen.threshold])[0]))
    return out
