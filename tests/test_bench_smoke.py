"""Smoke runs of the benchmarks with tiny counts, so that they cannot rot.

Nothing here asserts a timing (the machine is shared and noisy): the runs must finish, print every
row, route as configured (the fake's call counts agree) and leave RESULTS.md alone. The LiteLLM
half of `benchmarks/compare.py` needs the `bench` extra; without it those rows say "not measured"
and the LiteLLM check is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
HAS_LITELLM = importlib.util.find_spec("litellm") is not None
NO_LITELLM = "litellm is not installed (it comes with the `bench` extra: pip install -e '.[bench]')"

pytestmark = pytest.mark.slow


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _compare_section() -> str:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(r"<!-- compare:start -->.*?<!-- compare:end -->", text, re.S)
    return m.group(0) if m else ""


@pytest.fixture(scope="module")
def compare(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """One `compare.py --quick` run: (printed tables, raw numbers)."""
    before = _compare_section()
    raw = tmp_path_factory.mktemp("compare") / "raw.json"
    proc = _run(["-m", "benchmarks.compare", "--quick", "--no-write", "--json", str(raw)])
    assert _compare_section() == before, "--quick must leave RESULTS.md alone"
    data: dict[str, Any] = json.loads(raw.read_text())
    return proc.stdout, data


def _rows(text: str, heading: str) -> list[str]:
    """The table rows under one `###` heading."""
    part = text.split(heading, 1)[1].split("\n### ", 1)[0]
    return [line for line in part.splitlines() if line.startswith("| ") and not line.startswith("| ---")]


def _row(rows: list[str], *cells: str) -> str:
    prefix = "| " + " | ".join(cells) + " |"
    found = [r for r in rows if r.startswith(prefix)]
    assert len(found) == 1, f"no single row {prefix!r} in:\n" + "\n".join(rows)
    return found[0]


LIB_SYSTEMS = [("raw openai SDK", "1"), ("our Router", "1"), ("our Router", "2, with fallback"),
               ("LiteLLM Router", "1"), ("LiteLLM Router", "2, with fallback")]


def test_compare_prints_every_row_and_measures_ours(compare: tuple[str, dict[str, Any]]) -> None:
    text, data = compare
    lib = _rows(text, "### 1. Library path")
    for lat in ("0 ms", "50 ms"):
        for conc in ("1", "32"):
            for system, deps in LIB_SYSTEMS:
                row = _row(lib, lat, conc, system, deps)
                if "LiteLLM" not in system:
                    assert "not measured" not in row
            for deps in ("1", "2"):
                _row(lib, lat, conc, deps)  # the added-overhead ratio rows (1b)
    idle = _rows(text, "#### 1d. CPU while waiting")
    for conc in ("1", "32"):
        for system in ("raw openai SDK", "our Router"):
            assert "not measured" not in _row(idle, conc, system)
        _row(idle, conc, "LiteLLM Router")
    machinery = _rows(text, "#### 1c. Routing machinery alone")
    assert "not measured" not in _row(machinery, "our Router")
    _row(machinery, "LiteLLM Router")
    fail = _rows(text, "### 2. Failure path")
    cache = _rows(text, "### 3. Cache hit")
    foot = _rows(text, "### 4. Footprint")
    for lat in ("0 ms", "50 ms"):
        assert "not measured" not in _row(fail, lat, "our Router")
        _row(fail, lat, "LiteLLM Router")
        assert "not measured" not in _row(fail, lat, "raw openai SDK (the app catches the 500, calls the backup)")
    assert "not measured" not in _row(cache, "our Router")
    _row(cache, "LiteLLM Router")
    for system in ("raw openai SDK", "our Router"):
        assert "not measured" not in _row(foot, system)
    _row(foot, "LiteLLM Router")
    stream = _rows(text, "### 3b. Streaming in the library")
    for transport in ("http (default)", "sdk"):
        assert "not measured" not in _row(stream, "our Router", transport)
    assert "not measured" not in _row(stream, "raw openai SDK")
    _row(stream, "LiteLLM Router")
    service = _rows(text, "### 5. Service")
    assert "not measured" not in _row(service, "engine serve")
    assert "not measured" not in _row(service, "engine serve (cache hit)")
    for target in ("fake upstream, direct", "LiteLLM proxy", "Portkey gateway"):
        _row(service, target)
    assert "### Targets (DESIGN.md), from this run" in text
    assert "CHECK FAILED" not in text
    # every variant of ours ran and its upstream call counts matched its routing
    ours = [r for r in data["library"] if r["spec"]["system"] in ("raw", "ours")]
    assert {r["spec"]["key"] for r in ours} >= {
        "library/0ms/c1/ours/d1", "library/0ms/c1/ours/d2", "library/50ms/c32/ours/d2", "failure/0ms/c1/ours/d2",
        "failure/50ms/c1/raw/d2", "cache/0ms/c1/ours/d1", "footprint/0ms/c32/ours/d1", "footprint/0ms/c32/raw/d1",
        "machinery/0ms/c1/ours/d1", "stream/0ms/c1/ours/d1", "stream/0ms/c1/ours/d1/sdk", "stream/0ms/c1/raw/d1",
        "idle/0ms/c1/ours/d1", "idle/0ms/c32/raw/d1"}
    assert all(r["result"]["check"] == "ok" for r in ours)
    fallback = next(r for r in ours if r["spec"]["key"] == "failure/0ms/c1/ours/d2")["result"]
    total = fallback["n"] + next(r for r in ours if r["spec"]["key"] == "failure/0ms/c1/ours/d2")["spec"]["warmup"]
    assert fallback["upstream_calls"] == {"a": 0, "b": total, "down": total}
    assert fallback["served"] == {"backup": fallback["n"]}
    hits = next(r for r in ours if r["spec"]["key"] == "cache/0ms/c1/ours/d1")["result"]
    assert hits["upstream_calls"]["a"] == 1  # every repeat after the first came from the cache
    serve = next(s for s in data["services"] if s["target"] == "engine serve")
    assert serve["check"] == "ok" and serve["result"]["statuses"].keys() == {"200"}
    # through the service: one upstream call for the first request, the rest exact hits (streams are not cached)
    served_hits = next(s for s in data["services"] if s["target"] == "engine serve (cache hit)")
    assert served_hits["check"] == "ok" and served_hits["result"]["upstream_calls"] >= 1
    # offline: nothing in any benchmark process tried to leave the machine
    assert all(not r["process"]["net_blocked"] for r in data["library"])


@pytest.mark.skipif(not HAS_LITELLM, reason=NO_LITELLM)
def test_compare_measures_litellm(compare: tuple[str, dict[str, Any]]) -> None:
    text, data = compare
    lite = [r for r in data["library"] if r["spec"]["system"] == "litellm"]
    keys = {r["spec"]["key"] for r in lite}
    assert keys == {"library/0ms/c1/litellm/d1", "library/0ms/c1/litellm/d2", "library/0ms/c32/litellm/d1",
                    "library/0ms/c32/litellm/d2", "library/50ms/c1/litellm/d1", "library/50ms/c1/litellm/d2",
                    "library/50ms/c32/litellm/d1", "library/50ms/c32/litellm/d2", "failure/0ms/c1/litellm/d2",
                    "failure/50ms/c1/litellm/d2", "cache/0ms/c1/litellm/d1", "footprint/0ms/c32/litellm/d1",
                    "machinery/0ms/c1/litellm/d1", "stream/0ms/c1/litellm/d1", "idle/0ms/c1/litellm/d1",
                    "idle/0ms/c32/litellm/d1"}
    assert all(r["result"]["check"] == "ok" for r in lite)
    lib = _rows(text, "### 1. Library path")
    for lat in ("0 ms", "50 ms"):
        for conc in ("1", "32"):
            for deps in ("1", "2, with fallback"):
                assert "not measured" not in _row(lib, lat, conc, "LiteLLM Router", deps)
    assert "not measured" not in _row(_rows(text, "### 3. Cache hit"), "LiteLLM Router")
    assert "not measured" not in _row(_rows(text, "#### 1c. Routing machinery alone"), "LiteLLM Router")
    for conc in ("1", "32"):
        assert "not measured" not in _row(_rows(text, "#### 1d. CPU while waiting"), conc, "LiteLLM Router")
    assert all(not r["process"]["net_blocked"] for r in lite)


def test_decide_benchmark_quick() -> None:
    out = _run(["benchmarks/decide.py", "--quick"]).stdout
    for routes in ("10", "100", "1000"):
        assert re.search(rf"^\| {routes} \| \d+ \|", out, re.M), out


def test_router_benchmark_quick() -> None:
    out = _run(["benchmarks/router.py", "--quick"]).stdout
    for label in ("raw openai SDK call, p50", "**added per request**", "fallback machinery beyond two vendor calls",
                  "streaming: first chunk added", "exact cache hit, p50 / p99"):
        assert label in out, out


def test_state_backend_benchmark_quick() -> None:
    from tests.redis_fixture import REDIS_SERVER, SKIP_REASON

    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    out = _run(["benchmarks/state_backend.py", "--quick"]).stdout
    for label in ("| embedded, memory |", "| embedded, SQLite |", "| redis |", "Redis scripts per request",
                  "Exact cache hit"):
        assert label in out, out
    # rate limits, reservation, settlement: 3 per request (a little more when a busy machine
    # makes a quota refresh or a retry run too)
    m = re.search(r"(\d+\.\d) Redis scripts per request", out)
    assert m is not None and 3.0 <= float(m.group(1)) < 3.5, out
