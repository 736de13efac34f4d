"""The compare report's arithmetic on made-up runs: which runs it pairs and what it calls met."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.compare_report import Runs, idle_table, targets


def _run(kind: str, lat: int, conc: int, system: str, rep: int, cpu_ms: float) -> dict[str, Any]:
    key = f"{kind}/{lat}ms/c{conc}/{system}/d1"
    return {"spec": {"key": key, "rep": rep}, "result": {"cpu_ms": cpu_ms, "p50_ms": 1.0, "check": "ok"}}


def _runs(ours_at_50: list[float]) -> Runs:
    """Raw SDK and ours at 0 ms, at 50 ms and at 0 ms with the idle gap, one run per repetition."""
    rows = []
    for rep, ours50 in enumerate(ours_at_50):
        for conc in (1, 32):
            rows += [_run("library", 0, conc, "raw", rep, 1.0), _run("library", 50, conc, "raw", rep, 2.0),
                     _run("idle", 0, conc, "raw", rep, 2.1), _run("library", 0, conc, "ours", rep, 0.2),
                     _run("idle", 0, conc, "ours", rep, 0.8 + rep * 0.1),
                     _run("library", 50, conc, "ours", rep, ours50 + rep * 0.1)]
    return Runs(rows)


def _idle_verdicts(runs: Runs) -> list[str]:
    _, wait = idle_table(runs)
    rows = targets({}, {}, float("nan"), float("nan"), {}, None, wait)
    return [r.rsplit("|", 2)[-2].strip() for r in rows if "back to the 0 ms figure" in r]


def test_the_wait_is_ours_at_50_ms_minus_ours_with_the_idle_gap_of_the_same_run() -> None:
    # each repetition drifts by 0.1 ms in both variants: pairing by run cancels the drift
    table, wait = idle_table(_runs([0.75, 0.75, 0.75]))
    assert wait["ours-1"] == pytest.approx((-0.05, 0.2)) and wait["ours-32"] == pytest.approx((-0.05, 0.2))
    assert wait["raw-1"][0] == pytest.approx(-0.1)
    assert any(r.startswith("| 1 | our Router | 0.200 |") and "[-0.050, -0.050, -0.050]" in r for r in table)
    assert any(r.startswith("| 32 | LiteLLM Router | not measured") for r in table)


def test_back_to_the_0_ms_figure_within_a_tenth_of_it_else_missed() -> None:
    assert _idle_verdicts(_runs([0.81, 0.81, 0.81])) == ["met", "met"]  # +0.01 ms, bar 0.02 ms
    assert _idle_verdicts(_runs([0.85, 0.85, 0.85])) == ["**MISSED**", "**MISSED**"]  # +0.05 ms
    assert _idle_verdicts(Runs([])) == ["n/a", "n/a"]
