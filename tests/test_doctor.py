"""`engine doctor` against the wire fakes: a good provider, a refused key, an unreachable host,
a model id the vendor does not know."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from engine.cli.app import cli
from engine.ops.doctor import diagnose
from engine.policy.api import load_policy
from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer
from tests.fakes.clients import TEST_KEYS
from tests.test_serve_support import ServerThread, fake_policy


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def doctor_policy(fake: FakeVendorServer) -> str:
    bad_key, closed = fake.channel_url("badkey", "anthropic"), f"http://127.0.0.1:{_closed_port()}"
    return f"""version: 1
providers:
  openai: {{adapter: openai, api_key: {TEST_KEYS['openai']}, base_url: '{fake.openai_url}', timeout_s: 5}}
  anthropic: {{adapter: anthropic, api_key: {TEST_KEYS['anthropic']}, base_url: '{bad_key}', timeout_s: 5}}
  gemini: {{adapter: gemini, api_key: {TEST_KEYS['gemini']}, base_url: '{closed}', timeout_s: 5}}
  mistral: {{adapter: openai_compatible, api_key: {TEST_KEYS['openai_compatible']},
             base_url: '{fake.channel_url("compat")}', timeout_s: 5}}
models:
  gpt-mini: {{provider: openai, id: gpt-4o-mini, price: {{input: 0.15, output: 0.6}}, context_window: 128000}}
  gpt-typo: {{provider: openai, id: gpt-4o-minni, price: {{input: 0.15, output: 0.6}}, context_window: 128000}}
  claude: {{provider: anthropic, id: claude-haiku-4-5, price: {{input: 1, output: 5}}, context_window: 200000}}
  claude-big: {{provider: anthropic, id: claude-sonnet-4-5, price: {{input: 3, output: 15}}, context_window: 200000}}
  flash: {{provider: gemini, id: gemini-2.5-flash, price: {{input: 0.3, output: 2.5}}, context_window: 1000000}}
  mistral-small: {{provider: mistral, id: mistral-small-latest, price: {{input: 0.1, output: 0.3}},
                  context_window: 32000}}
  mistral-gone: {{provider: mistral, id: mistral-retired-2023, price: {{input: 0.1, output: 0.3}},
                 context_window: 32000}}
routes:
  - name: default
    strategy: ordered
    candidates: [gpt-mini, gpt-typo, claude, claude-big, flash, mistral-small, mistral-gone]
"""


@pytest.fixture
def policy_file(fake: FakeVendorServer, tmp_path: Path) -> Path:
    fake.set_mode("badkey", "auth")
    path = tmp_path / "policy.yaml"
    path.write_text(doctor_policy(fake))
    return path


async def test_each_model_gets_a_verdict_and_the_reason(policy_file: Path, fake: FakeVendorServer) -> None:
    checks = {c.model: c for c in await diagnose(load_policy(policy_file), timeout_s=5)}
    assert {m: (c.status, c.problem) for m, c in checks.items()} == {
        "gpt-mini": ("ok", ""),
        "gpt-typo": ("fail", "model not found"),
        "claude": ("fail", "credentials"),
        "claude-big": ("skipped", "credentials"),  # the key was refused once: not asked again
        "flash": ("fail", "unreachable"),
        "mistral-small": ("ok", ""),
        "mistral-gone": ("fail", "model not found"),
    }
    assert "401" in checks["claude"].detail and TEST_KEYS["anthropic"] not in checks["claude"].detail
    assert "connection refused" in checks["flash"].detail
    assert "gpt-4o-minni" in checks["gpt-typo"].detail
    # probes are model look-ups: nothing was generated
    assert all("/models" in r.path for r in fake.requests())
    assert fake.calls("badkey") == 1


def test_cli_prints_the_table_and_exits_1(policy_file: Path) -> None:
    r = CliRunner().invoke(cli, ["doctor", "--policy", str(policy_file)], env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output
    lines = r.output.splitlines()
    row = {name: next(line for line in lines if f" {name} " in line) for name in ("gpt-mini", "claude", "flash")}
    assert " ok " in row["gpt-mini"]
    assert " fail " in row["claude"] and "credentials" in row["claude"] and "refused" in row["claude"]
    assert " fail " in row["flash"] and "unreachable" in row["flash"]
    assert lines[-1] == ("2 of 7 models ready; failing: openai (model not found), anthropic (credentials), "
                         "gemini (unreachable), mistral (model not found)")


def test_cli_json_and_a_healthy_policy_exits_0(policy_file: Path, fake: FakeVendorServer, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["doctor", "--policy", str(policy_file), "--json"])
    data = json.loads(r.output)
    assert r.exit_code == 1 and data["ok"] is False and len(data["checks"]) == 7
    fake.set_mode("badkey", None)
    fake.configure(models=["gpt-4o-mini", "gpt-4o-minni", "claude-haiku-4-5", "claude-sonnet-4-5",
                           "mistral-small-latest", "mistral-retired-2023"])
    good = tmp_path / "good.yaml"
    good.write_text("\n".join(line for line in policy_file.read_text().splitlines()
                              if "gemini" not in line and "flash" not in line).replace(", flash", ""))
    r = CliRunner().invoke(cli, ["doctor", "--policy", str(good), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["summary"] == "6 of 6 models ready"


def test_cli_refuses_an_invalid_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodels: {}\n")
    r = CliRunner().invoke(cli, ["doctor", "--policy", str(bad)])
    assert r.exit_code == 1 and "error" in r.output


def _wait_for_checks(url: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        r = httpx.get(url + "/readyz")
        if "checks" in r.json() or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_readyz_requires_the_checks_when_asked(policy_file: Path, fake: FakeVendorServer, tmp_path: Path) -> None:
    config = ServeConfig(policy=str(policy_file), reload_interval_s=0, ready_check_s=3600)
    with ServerThread(config) as s:
        r = _wait_for_checks(s.url)
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["checks"]["ok"] is False
    assert "anthropic (credentials)" in body["reason"] and "gemini (unreachable)" in body["reason"]
    assert {c["model"] for c in body["checks"]["failing"]} == {"gpt-typo", "claude", "flash", "mistral-gone"}

    good = tmp_path / "good.yaml"
    good.write_text(fake_policy(fake))
    with ServerThread(ServeConfig(policy=str(good), reload_interval_s=0, ready_check_s=3600)) as s:
        r = _wait_for_checks(s.url)
    assert r.status_code == 200 and r.json()["checks"] == {**r.json()["checks"], "ok": True, "failing": []}


def test_serve_check_refuses_to_start_on_a_failing_provider(policy_file: Path) -> None:
    r = CliRunner().invoke(cli, ["serve", "--policy", str(policy_file), "--check", "--port", "0"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 1
    assert "refusing to serve" in r.stderr and "credentials" in r.stdout


def test_a_missing_key_store_is_refused_unless_create(tmp_path: Path, policy_file: Path) -> None:
    typo = tmp_path / "kyes.db"
    r = CliRunner().invoke(cli, ["serve", "--policy", str(policy_file), "--db", str(typo), "--port", "0"])
    assert r.exit_code == 2 and "does not exist" in r.stderr and "--create" in r.stderr
    for args in (["keys", "list", "--db", str(typo)], ["keys", "revoke", "--db", str(typo), "key_x"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and "does not exist" in r.stderr
    assert not typo.exists()
    r = CliRunner().invoke(cli, ["keys", "list", "--db", str(typo), "--create"])
    assert r.exit_code == 0 and typo.exists() and "no keys" in r.stderr
