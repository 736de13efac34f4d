"""`similar_to` signals: a query type defined by example prompts instead of keywords.

    signals:
      refund_request:
        similar_to:
          examples: ["I want my money back", "How do I get a refund for my order?"]
          threshold: 0.7

The signal is true when the last user message's cosine similarity to its nearest example reaches
`threshold`. Examples are embedded once, on first use, with the bundled embedder (shared by every
signal of the process); each request then costs one embedding of its prompt, shared by all
`similar_to` signals of that request (see benchmarks/RESULTS.md for the cost). The Router embeds
the prompt in a worker thread before it decides (`prepare`), so the event loop keeps serving other
requests meanwhile; `decide` then finds the vector ready. The decision still waits for it: keep
`similar_to` for policies that accept a few milliseconds per request, or gate it behind cheaper signals.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.semantic.embedders import Embedder

if TYPE_CHECKING:
    from engine.semantic.embedders import Vectors

__all__ = ["SimilarTo", "shared_embedder"]

_LOCK = threading.Lock()
_SHARED: list[Embedder] = []
# prompts embedded lately, so several signals of one request, and `prepare` before `decide`, embed it
# once; a few entries, as concurrent requests each prepare their own before deciding
_RECENT: OrderedDict[tuple[str, str], Any] = OrderedDict()
_RECENT_SIZE = 256


def shared_embedder() -> Embedder:
    """The process-wide bundled embedder `similar_to` signals use (created on first call)."""
    with _LOCK:
        if not _SHARED:
            from engine.semantic.onnx import OnnxEmbedder

            _SHARED.append(OnnxEmbedder())
        return _SHARED[0]


def _prompt_vector(emb: Embedder, text: str) -> Vectors:
    key = (emb.name, text)
    with _LOCK:
        vec: Vectors | None = _RECENT.get(key)
        if vec is not None:
            _RECENT.move_to_end(key)
            return vec
    vec = emb.embed([text])[0]
    with _LOCK:
        _RECENT[key] = vec
        while len(_RECENT) > _RECENT_SIZE:
            _RECENT.popitem(last=False)
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

    def prepare(self, text: str) -> None:
        """Embed the examples (first time) and `text`, so that a call with `text` costs no embedding.
        Blocking: the Router runs it in a worker thread."""
        if text.strip():
            self.similarity(text[:4000])
