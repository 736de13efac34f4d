"""Several router processes on one Redis: quotas and rate limits hold across all of them.

The embedded backend's answer to several workers is the refusal of `engine serve --workers N`
when limits would multiply.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.redis_fixture import RedisServer

REPO = Path(__file__).resolve().parents[1]

POLICY = """
version: 1
providers:
  p: {{adapter: simulated, limits: {{rpm: 30}}}}
  q: {{adapter: simulated}}
models:
  m: {{provider: p, price: {{input: 1, output: 2}}, context_window: 8000}}
  n: {{provider: q, price: {{input: 2, output: 4}}, context_window: 8000}}
routes:
  - {{name: default, strategy: ordered, candidates: [m, n]}}
quotas:
  - {{name: tenant-requests, scope: [tenant], window: day, limit: {{requests: 100}}}}
  - {{name: spend, scope: [], window: month, limit: {{cost_usd: 0.05}}}}
deadline_s: 5
state: {{backend: {backend}, url: "{url}", timeout_ms: 3000}}
"""


def run_workers(policy: Path, tmp: Path, n_procs: int, n: int, spread_s: float = 0.0) -> tuple[list[dict[str, int]],
                                                                                               list[Path]]:
    dbs = [tmp / f"replica{i}.db" for i in range(n_procs)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.redis_router_worker", str(policy), str(db), str(n),
                               f"w{i}", str(spread_s)], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for i, db in enumerate(dbs)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return [json.loads(o) for o in outs], dbs


def total(results: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in results)


def log_rows(dbs: list[Path]) -> dict[str, int]:
    out: dict[str, int] = {}
    for db in dbs:
        con = sqlite3.connect(db)
        for outcome, k in con.execute("SELECT outcome, COUNT(*) FROM requests GROUP BY outcome"):
            out[outcome] = out.get(outcome, 0) + k
        con.close()
    return out


def served_cost(dbs: list[Path]) -> float:
    """What the served requests cost, summed over the replicas' own decision logs."""
    spent = 0.0
    for db in dbs:
        con = sqlite3.connect(db)
        spent += con.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE outcome = 'ok'").fetchone()[0]
        con.close()
    return float(spent)


def test_three_routers_fifty_concurrent_share_quota_and_rpm(redis_server: RedisServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(backend="redis", url=redis_server.url))
    results, dbs = run_workers(policy, tmp_path, 3, 50)
    ok, refused = total(results, "ok"), total(results, "quota_exceeded")
    # every request answered or explicitly refused, and nothing else happened
    assert ok + refused == 150, results
    assert ok <= 100  # the tenant quota, across the three processes
    assert refused >= 50
    # the provider's 30 rpm, across the three processes (the run takes far less than a minute)
    assert total(results, "model:m") <= 30
    assert total(results, "model:m") + total(results, "model:n") == ok
    rows = log_rows(dbs)
    assert rows.get("served", 0) == ok and rows.get("refused_quota", 0) == refused
    assert sum(rows.values()) == 150  # one row per request, in the replica's own log
    spent = served_cost(dbs)
    one_estimate = (20 * 2 + 100 * 4) / 1_000_000
    assert spent <= 0.05 + one_estimate


def test_spend_quota_binds_across_routers(redis_server: RedisServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    # a spend budget that binds before the request count: the dollar ledger is shared too
    policy.write_text(POLICY.format(backend="redis", url=redis_server.url).replace("cost_usd: 0.05", "cost_usd: 0.004"))
    results, dbs = run_workers(policy, tmp_path, 3, 50)
    ok, refused = total(results, "ok"), total(results, "quota_exceeded")
    assert ok + refused == 150 and refused > 0
    spent = served_cost(dbs)
    one_estimate = (20 * 2 + 100 * 4) / 1_000_000
    assert spent <= 0.004 + one_estimate
    assert ok < 100


def test_embedded_backend_refuses_several_workers_with_limits(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(backend="embedded", url="redis://unused:6379/0"))
    proc = subprocess.run([sys.executable, "-c", "from engine.cli import main; main()", "serve", "--policy",
                           str(policy), "--workers", "4", "--port", "0", "--log-db", str(tmp_path / "log.db")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing --workers 4 with state.backend 'embedded'" in proc.stderr
    assert "provider p rpm 30" in proc.stderr
    assert "state: {backend: redis" in proc.stderr
    # the quotas are shared through the log file, so they are not named
    assert "tenant-requests" not in proc.stderr


def test_engine_serve_workers_share_limits_through_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.test_serve_support import ServeProcess

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(backend="redis", url=redis_server.url).replace(
        "{adapter: simulated", "{adapter: simulated, time_scale: 0"))
    log = tmp_path / "log.db"
    with ServeProcess("--policy", str(policy), "--workers", "3", "--log-db", str(log)) as serve:
        deadline = time.monotonic() + 60
        while sum("Application startup complete" in line for line in serve.output) < 3:
            assert time.monotonic() < deadline, "".join(serve.output)
            time.sleep(0.05)
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}

        def one(i: int) -> tuple[int, str]:
            r = httpx.post(serve.url + "/v1/chat/completions", json={**body, "user": f"u{i}"}, timeout=30)
            return r.status_code, r.headers.get("x-router-model", "")

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(150)))
    ok = [m for status, m in answers if status == 200]
    assert len(ok) <= 100  # one tenant ('anonymous') quota over the three workers
    assert sum(1 for status, _ in answers if status == 429) == 150 - len(ok)
    assert ok.count("m") <= 30  # the provider's rpm over the three workers
    con = sqlite3.connect(log)
    assert con.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 150
    con.close()
