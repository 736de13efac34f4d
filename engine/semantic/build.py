"""Build the semantic layer a policy asks for: embedder, store, cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.semantic.embedders import Embedder, EmbedderError, HashingEmbedder

if TYPE_CHECKING:
    from engine.policy.model import Policy, SemanticCacheConfig
    from engine.runtime.clock import Clock
    from engine.semantic.cache import SemanticCache

__all__ = ["build_embedder", "build_semantic_cache"]


def build_embedder(config: SemanticCacheConfig, policy: Policy | None = None) -> Embedder:
    """The embedder `cache.semantic.embedder` names.

    Raises:
        EmbedderError: an unknown provider, or one that has no embeddings API.
    """
    if config.embedder == "hashing":
        return HashingEmbedder()
    if config.embedder == "bundled":
        from engine.semantic.onnx import OnnxEmbedder

        return OnnxEmbedder()
    name = config.embedder.removeprefix("provider:")
    provider = policy.providers.get(name) if policy is not None else None
    if provider is None or config.embedder_model is None:
        raise EmbedderError(f"cache.semantic.embedder: unknown provider {name!r}")

    def make():  # type: ignore[no-untyped-def]
        from adapters.registry import build_adapter

        return build_adapter(provider.adapter, provider=provider.name, model=config.embedder_model or "",
                             api_key=provider.api_key, base_url=provider.base_url, timeout_s=provider.timeout_s,
                             options=provider.options)

    if provider.adapter in ("openai", "openai_compatible"):
        from engine.semantic.api import OpenAIEmbedder

        return OpenAIEmbedder(make, model=config.embedder_model, dimension=config.embedder_dimension or 1536,
                              send_dimensions=config.embedder_dimension is not None)
    if provider.adapter == "gemini":
        from engine.semantic.api import GeminiEmbedder

        return GeminiEmbedder(make, model=config.embedder_model, dimension=config.embedder_dimension or 768)
    raise EmbedderError(f"cache.semantic.embedder: provider {name!r} uses the {provider.adapter} adapter, "
                        "which has no embeddings API; use an openai, openai_compatible or gemini provider")


def _quiet(load: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            load()
        except EmbedderError:
            pass  # raised again, with its message, by the first lookup
    return run


def build_semantic_cache(policy: Policy, *, clock: Clock, path: str | Path | None,
                         embedder: Embedder | None = None, conn: Any = None) -> SemanticCache:
    """The semantic layer of `policy`, persisted like its exact cache.

    Args:
        policy: the policy (`cache.semantic` set).
        clock: the router's clock.
        path: the exact cache's SQLite file (`cache.backend: sqlite`).
        embedder: overrides the one the policy names (tests).
        conn: the router's `RedisConn` with `state.backend: redis`; without it the store opens its own.
    """
    from engine.semantic.cache import SemanticCache
    from engine.semantic.store import EntryStore, MemoryEntryStore, SqliteEntryStore

    config = policy.cache.semantic
    if config is None:
        raise EmbedderError("the policy has no cache.semantic section")
    emb = embedder or build_embedder(config, policy)
    load = getattr(emb, "load", None)
    if callable(load):
        import threading

        # numpy first, on this thread: the load thread's onnxruntime import and the first lookup's
        # numpy import would otherwise race, and Python breaks that import cycle by handing one of
        # them a half-initialised numpy ("cannot load module more than once per process")
        import numpy  # noqa: F401

        # check the model file and build the session while the app starts, not on the first miss
        threading.Thread(target=_quiet(load), name="semantic-embedder-load", daemon=True).start()
    store: EntryStore
    if policy.state.backend == "redis":  # the exact cache is in Redis: so are the entries, for every replica
        from engine.runtime.backends.redis_conn import RedisConn
        from engine.runtime.backends.redis_semantic import RedisEntryStore

        store = RedisEntryStore(conn or RedisConn(policy.state), emb.name, ttl_s=policy.cache.ttl_s,
                                max_entries=policy.cache.max_entries, owns_conn=conn is None)
    elif policy.cache.backend == "sqlite" and path:
        store = SqliteEntryStore(path, emb.name)
    else:
        store = MemoryEntryStore()
    return SemanticCache(config, emb, store, clock=clock, ttl_s=policy.cache.ttl_s,
                         max_entries=policy.cache.max_entries)
