"""API embedders: OpenAI's `/v1/embeddings` and Gemini's `embedContent`, through the adapters.

Each embedder wraps the provider's adapter (built from the policy's provider entry), so the key
lookup, base URL, timeout and the error taxonomy are the adapters' own: a vendor failure leaves
as an `adapters.errors.ProviderError`, with the secret scrubbed. Vectors are L2-normalised here
(Gemini's are not unit length below 3072 dimensions).

`embed_async` uses the adapter's async client on the running loop (network I/O, no thread
needed); the synchronous `embed` (calibration, scripts) runs it on a private loop with a fresh
adapter, so an async client is never shared between loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.semantic.embedders import Embedder, EmbedderError, require_numpy

if TYPE_CHECKING:
    from adapters.base import LLMAdapter
    from engine.semantic.embedders import Vectors

__all__ = ["GeminiEmbedder", "OpenAIEmbedder"]

_BATCH = 96  # inputs per call: below both vendors' limits (OpenAI 2048, Gemini 100)


def _unit(rows: list[list[float]], dimension: int, who: str) -> Vectors:
    require_numpy()
    import numpy as np

    out = np.asarray(rows, dtype=np.float32)
    if out.ndim != 2 or out.shape[1] != dimension:
        raise EmbedderError(f"{who}: expected vectors of {dimension} dimensions, got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


class _ApiEmbedder(Embedder):
    def __init__(self, make_adapter: Callable[[], LLMAdapter], *, model: str, dimension: int) -> None:
        if dimension < 1:
            raise EmbedderError(f"{type(self).__name__}: dimension must be positive, got {dimension}")
        self._make = make_adapter
        self._adapter: LLMAdapter | None = None
        self.model = model
        self.dimension = dimension

    def _get(self) -> LLMAdapter:
        if self._adapter is None:
            self._adapter = self._make()
        return self._adapter

    async def _call(self, adapter: Any, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    async def _embed_with(self, adapter: Any, texts: Sequence[str]) -> Vectors:
        rows: list[list[float]] = []
        for start in range(0, len(texts), _BATCH):
            with adapter._map_errors():  # the adapter's one choke point for vendor errors
                rows.extend(await self._call(adapter, list(texts[start:start + _BATCH])))
        return _unit(rows, self.dimension, self.name)

    async def embed_async(self, texts: Sequence[str]) -> Vectors:
        """Embed on the running loop with the adapter's async client."""
        return await self._embed_with(self._get(), texts)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed synchronously (on a private loop with its own adapter); not for use inside a running loop."""
        async def run() -> Vectors:
            adapter = self._make()
            try:
                return await self._embed_with(adapter, texts)
            finally:
                await adapter.aclose()

        return asyncio.run(run())

    def close(self) -> None:
        """Nothing to do synchronously; `aclose` closes the adapter's client."""

    async def aclose(self) -> None:
        """Close the adapter's client."""
        if self._adapter is not None:
            await self._adapter.aclose()
            self._adapter = None


class OpenAIEmbedder(_ApiEmbedder):
    """OpenAI embeddings (`text-embedding-3-small` and friends, or any compatible server).

    Args:
        make_adapter: builds an `adapters.openai.OpenAIAdapter` (or a compatible one) for the provider.
        model: embedding model id.
        dimension: vector length; sent as `dimensions` unless it is the model's native size.
        send_dimensions: whether to send `dimensions` (text-embedding-3 models accept it, ada-002 does not).
    """

    def __init__(self, make_adapter: Callable[[], LLMAdapter], *, model: str = "text-embedding-3-small",
                 dimension: int = 1536, send_dimensions: bool = False) -> None:
        super().__init__(make_adapter, model=model, dimension=dimension)
        self.name = f"openai:{model}:{dimension}"
        self._send_dimensions = send_dimensions

    async def _call(self, adapter: Any, texts: list[str]) -> list[list[float]]:
        kwargs: dict[str, Any] = {"model": self.model, "input": texts}
        if self._send_dimensions:
            kwargs["dimensions"] = self.dimension
        resp = await adapter._get_client().embeddings.create(**kwargs)
        return [list(d.embedding) for d in sorted(resp.data, key=lambda d: d.index)]


class GeminiEmbedder(_ApiEmbedder):
    """Gemini embeddings (`gemini-embedding-001`, `text-embedding-004`).

    Args:
        make_adapter: builds an `adapters.gemini.GeminiAdapter` for the provider.
        model: embedding model id.
        dimension: vector length, sent as `output_dimensionality`.
    """

    def __init__(self, make_adapter: Callable[[], LLMAdapter], *, model: str = "gemini-embedding-001",
                 dimension: int = 768) -> None:
        super().__init__(make_adapter, model=model, dimension=dimension)
        self.name = f"gemini:{model}:{dimension}"

    async def _call(self, adapter: Any, texts: list[str]) -> list[list[float]]:
        from google.genai import types

        resp = await adapter._get_client().aio.models.embed_content(
            model=self.model, contents=texts,
            config=types.EmbedContentConfig(output_dimensionality=self.dimension, task_type="SEMANTIC_SIMILARITY"))
        return [list(e.values or ()) for e in resp.embeddings or ()]
