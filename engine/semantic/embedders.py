"""The `Embedder` interface and the deterministic hashing embedder used by unit tests.

An embedder turns texts into unit-length float32 vectors of a fixed dimension, so that a dot
product is the cosine similarity. `embed` is synchronous and may be slow (a model run, an HTTP
call); `embed_async` runs it in a worker thread so that the event loop is never blocked.

    HashingEmbedder          feature hashing of words and character trigrams; no model, instant
    OnnxEmbedder             the bundled all-MiniLM-L6-v2 (engine.semantic.onnx, extra `semantic`)
    OpenAIEmbedder           OpenAI's embeddings endpoint through the openai adapter (engine.semantic.api)
    GeminiEmbedder           Gemini's embedContent through the gemini adapter (engine.semantic.api)
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.errors import EngineError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]

__all__ = ["EmbedderError", "Embedder", "HashingEmbedder", "require_numpy"]

_NUMPY_FIX = "the semantic cache needs numpy and the bundled model: pip install 'llm-policy-router[semantic]'"


class EmbedderError(EngineError):
    """An embedder cannot run: a missing optional dependency, a bad model file, a bad configuration."""


def require_numpy() -> None:
    """Raise `EmbedderError` with the install command when numpy is missing."""
    import importlib.util

    if importlib.util.find_spec("numpy") is None:
        raise EmbedderError(_NUMPY_FIX)


class Embedder(abc.ABC):
    """Turns texts into unit-length vectors; a dot product of two vectors is their cosine."""

    name: str
    """Stable identifier of the model (vectors of different names never share an index)."""
    dimension: int
    """Length of every vector."""

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` in one call.

        Returns:
            A `(len(texts), dimension)` float32 array of L2-normalised rows.
        """

    async def embed_async(self, texts: Sequence[str]) -> Vectors:
        """`embed` in a worker thread: the event loop keeps serving other requests meanwhile."""
        return await asyncio.to_thread(self.embed, list(texts))

    def close(self) -> None:  # noqa: B027 - optional hook: most embedders hold nothing to release
        """Release what the embedder holds (sessions, clients)."""


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder(Embedder):
    """Feature hashing of lower-cased words and character trigrams (signed, L2-normalised).

    Deterministic across processes and machines (blake2b, not Python's salted `hash`), so tests
    can assert exact similarities. It captures surface overlap only; it is not a semantic model.

    Args:
        dimension: vector length.
    """

    def __init__(self, dimension: int = 256) -> None:
        if dimension < 8:
            raise EmbedderError(f"hashing embedder: dimension must be at least 8, got {dimension}")
        self.name = f"hashing-{dimension}"
        self.dimension = dimension

    def _features(self, text: str) -> list[str]:
        low = text.lower()
        words = _WORD.findall(low)
        grams = [f"#{w[i:i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
        return words + grams

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`; an empty text gets the zero vector."""
        require_numpy()
        import numpy as np

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                digest = hashlib.blake2b(feat.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dimension] += 1.0 if (value >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
