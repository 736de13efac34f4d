"""`engine stats`, `report` and `replay` read the logs of several replicas as one (`--db` repeated)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.app import cli
from engine.runtime.router import Router
from engine.store.merge import merge_logs
from tests.runtime.conftest import make_policy, sims


@pytest.fixture
def replica_logs(tmp_path: Path) -> list[Path]:
    """Three replicas' logs: 4, 5 and 6 requests, with attempts."""
    import asyncio

    policy = make_policy()
    paths = []

    async def fill(db: Path, n: int) -> None:
        router = Router(policy, log_path=db, adapters=sims(policy))
        for i in range(n):
            await router.generate(f"{db.stem} {i}", max_tokens=10, meta={"tenant": db.stem})
        await router.aclose()

    for i, n in enumerate((4, 5, 6)):
        db = tmp_path / f"replica{i}.db"
        asyncio.run(fill(db, n))
        paths.append(db)
    return paths


def _stats(*dbs: Path) -> dict[str, object]:
    args = [a for db in dbs for a in ("--db", str(db))]
    result = CliRunner().invoke(cli, ["stats", *args, "--by", "tenant", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def test_stats_adds_up_the_replicas(replica_logs: list[Path]) -> None:
    one = [_stats(db) for db in replica_logs]
    merged = _stats(*replica_logs)
    assert merged["totals"]["requests"] == 15 == sum(s["totals"]["requests"] for s in one)  # type: ignore[index]
    assert merged["totals"]["cost_usd"] == pytest.approx(  # type: ignore[index]
        sum(s["totals"]["cost_usd"] for s in one))  # type: ignore[index]
    assert {g["tenant"] for g in merged["groups"]} == {"replica0", "replica1", "replica2"}  # type: ignore[index,union-attr]
    assert merged["db"] == " + ".join(str(p) for p in replica_logs)
    attempts = sum(a["attempts"] for a in merged["attempts"])  # type: ignore[index,union-attr]
    assert attempts == 15  # row ids restart in every file; none was lost or doubled


def test_replay_and_report_take_several_logs(replica_logs: list[Path], tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    from tests.runtime.conftest import POLICY

    policy.write_text(POLICY)
    args = [a for db in replica_logs for a in ("--db", str(db))]
    result = CliRunner().invoke(cli, ["replay", *args, "--policy", str(policy), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 15
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", *args, "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0


def test_the_same_file_twice_or_a_missing_one_is_an_error(replica_logs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="given twice"):
        merge_logs([replica_logs[0], replica_logs[0]], tmp_path / "m.db")
    result = CliRunner().invoke(cli, ["stats", "--db", str(replica_logs[0]), "--db", str(tmp_path / "nope.db")])
    assert result.exit_code != 0 and "nope.db" in result.output
