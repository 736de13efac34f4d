"""`engine serve` keeps a decision log by default, and says where."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from engine.policy.bundled import default_policy_path
from engine.server.config import default_log_path
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServeProcess, fake_policy


def test_serve_logs_beside_the_policy_by_default(fake: FakeVendorServer, tmp_path: Path) -> None:
    policy = tmp_path / "team.yaml"
    policy.write_text(fake_policy(fake))  # no log.sqlite
    db = tmp_path / "team.decisions.db"
    with ServeProcess("--policy", str(policy), "--reload-interval", "0") as serve:
        r = httpx.post(serve.url + "/v1/chat/completions",
                       json={"model": "auto", "messages": [{"role": "user", "content": "hello"}]}, timeout=30)
        assert r.status_code == 200
    assert any(f"decision log {db}" in line for line in serve.output), serve.output
    with sqlite3.connect(db) as conn:
        assert conn.execute("select id, outcome from requests").fetchall() == [(r.headers["x-request-id"], "served")]


def test_the_policy_or_the_flag_wins_and_no_log_db_opts_out(fake: FakeVendorServer, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(fake_policy(fake, log=str(tmp_path / "own.db")))
    with ServeProcess("--policy", str(policy), "--reload-interval", "0") as serve:
        pass
    assert any(f"decision log {tmp_path / 'own.db'}" in line for line in serve.output)
    bare = tmp_path / "bare.yaml"
    bare.write_text(fake_policy(fake))
    with ServeProcess("--policy", str(bare), "--reload-interval", "0", "--no-log-db") as serve:
        pass
    assert any("no decision log" in line for line in serve.output)
    assert not (tmp_path / "bare.decisions.db").exists()


def test_default_path_rules(tmp_path: Path) -> None:
    assert default_log_path(tmp_path / "a.yaml") == (tmp_path / "a.decisions.db").resolve()
    # the bundled policies live in the package: the log goes to the working directory
    assert default_log_path(default_policy_path(), cwd=tmp_path) == (tmp_path / "decisions.db").resolve()
