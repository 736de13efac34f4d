"""`similar_to` signals: a query type defined by example prompts instead of keywords.

    signals:
      refund_request:
        similar_to:
          examples: ["I want my money back", "How do I get a refund for my order?"]
          threshold: 0.7

The signal is true when the last user message's cosine similarity to its nearest example reaches
`threshold`. Examples are embedded once, on first use, with the bundled embedder (shared by every
signal of the process); each request then costs one embedding of its prompt, shared by all
`similar_to` signals of that request (see benchmarks/RESULTS.md for the cost). It runs inside
`decide`'s feature extraction, synchronously: keep `similar_to` for policies that accept a few
milliseconds per request, or gate it behind cheaper signals.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.semantic.embedders import Embedder

if TYPE_CHECKING:
    from engine.semantic.embedders import Vectors

__all__ = ["SimilarTo", "shared_embedder"]

_LOCK = threading.Lock()
_SHARED: list[Embedder] = []
_LAST: dict[str, Any] = {}  # the last prompt embedded, so several signals of one request embed it once


def shared_embedder() -> Embedder:
    """The process-wide bundled embedder `similar_to` signals use (created on first call)."""
    with _LOCK:
        if not _SHARED:
            from engine.semantic.onnx import OnnxEmbedder

            _SHARED.append(OnnxEmbedder())
        return _SHARED[0]


def _prompt_vector(emb: Embedder, text: str) -> Vectors:
    with _LOCK:
        if _LAST.get("text") == text and _LAST.get("name") == emb.name:
            vec: Vectors = _LAST["vector"]
            return vec
    vec = emb.embed([text])[0]
    with _LOCK:
        _LAST.update(text=text, name=emb.name, vector=vec)
    return vec


class SimilarTo:
    """The matcher of one `similar_to` signal.

    Args:
        examples: example prompts of the intent.
        threshold: cosine the nearest example must reach.
        embedder: defaults to the shared bundled one.
    """

    def __init__(self, examples: Sequence[str], threshold: float, embedder: Embedder | None = None) -> None:
        self.examples = tuple(examples)
        self.threshold = threshold
        self._embedder = embedder
        self._matrix: Vectors | None = None

    def _emb(self) -> Embedder:
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder

    def similarity(self, text: str) -> float:
        """Cosine of `text` to its nearest example."""
        emb = self._emb()
        if self._matrix is None:
            self._matrix = emb.embed(list(self.examples))
        return float((self._matrix @ _prompt_vector(emb, text)).max())

    def __call__(self, text: str) -> bool:
        """Whether `text` is similar enough to one of the examples."""
        return bool(text.strip()) and self.similarity(text[:4000]) >= self.threshold
