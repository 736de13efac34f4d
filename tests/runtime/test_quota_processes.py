"""Quotas hold across processes sharing one SQLite file, through the whole router."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

QUOTA_POLICY = """
version: 1
providers:
  p: {adapter: simulated}
models:
  m: {provider: p, price: {input: 1, output: 2}, context_window: 8000}
routes:
  - {name: default}
quotas:
  - {name: shared-requests, scope: [tenant], window: day, limit: {requests: 60}}
  - {name: shared-spend, scope: [], window: month, limit: {cost_usd: 0.002}}
"""
REPO = Path(__file__).resolve().parents[2]


def test_four_processes_fifty_concurrent_never_overshoot(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.runtime.quota_router_worker", str(db), "50", f"w{i}"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ok = sum(int(o.split()[0]) for o in outs)
    refused = sum(int(o.split()[1]) for o in outs)
    assert ok + refused == 200
    con = sqlite3.connect(db)
    served, spent = con.execute("SELECT COUNT(*), COALESCE(SUM(cost_usd), 0) FROM requests "
                                "WHERE outcome IN ('served', 'cached')").fetchone()
    (quota_rows,) = con.execute("SELECT COUNT(*) FROM requests WHERE outcome = 'refused_quota'").fetchone()
    assert served == ok and quota_rows == refused
    # the request quota is exact; spend may exceed only by what one request was estimated to cost
    one_estimate = (20 * 1 + 100 * 2) / 1_000_000
    assert served <= 60
    assert spent <= 0.002 + one_estimate
    assert served < 60  # the spend quota binds first here
    assert refused > 0
