"""Keys fit for a team: expiry, allow-list, rpm, parallel requests, metadata, `keys update` and the
admin HTTP API."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from engine.cli.app import cli
from engine.server.config import ServeConfig
from engine.server.keystore import KeyStore, parse_expiry
from tests.fakes import FakeVendorServer, Fault
from tests.test_serve_support import ServerThread, fake_policy

ADMIN = "sk-admin-" + "x" * 40
MSG = [{"role": "user", "content": "hello"}]


def test_store_keeps_the_new_settings_and_updates_them(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "k.db")
    info, _ = store.create("acme", expires_at=2_000_000_000.0, allow=["auto", "gpt-mini", "auto"], rpm=60,
                           max_parallel=4, metadata={"team": "search"})
    assert (info.allow, info.rpm, info.max_parallel, info.expires_at) == (("auto", "gpt-mini"), 60, 4, 2e9)
    assert store.get(info.id) == info
    changed = store.update(info.id, rpm=None, allow=[], expires_at=None, metadata={"team": "ads"}, name="bot")
    assert (changed.rpm, changed.allow, changed.expires_at, dict(changed.metadata), changed.name) == (
        None, (), None, {"team": "ads"}, "bot")
    with pytest.raises(ValueError, match="cannot update tenant"):
        store.update(info.id, tenant="other")
    with pytest.raises(ValueError, match="rpm must be a positive integer"):
        store.update(info.id, rpm=0)
    store.revoke(info.id)
    with pytest.raises(KeyError, match="revoked"):
        store.update(info.id, name="x")
    store.close()


def test_a_key_store_from_before_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, "
                     "tenant TEXT NOT NULL, name TEXT, tier TEXT, metadata TEXT NOT NULL DEFAULT '{}', quota TEXT, "
                     "created_at REAL NOT NULL, revoked_at REAL)")
        conn.execute("INSERT INTO api_keys VALUES ('key_old', 'h', 'sk-rt-abc', 'acme', NULL, NULL, '{}', NULL, 1.0, "
                     "NULL)")
    store = KeyStore(path, create=False)
    [old] = store.keys()
    assert (old.id, old.allow, old.rpm, old.expires_at) == ("key_old", (), None, None)
    store.close()


def test_expiry_forms() -> None:
    assert parse_expiry("30d", now=100.0) == 100.0 + 30 * 86400
    assert parse_expiry("2026-06-30") == 1_782_777_600.0
    assert parse_expiry("never") is None
    with pytest.raises(ValueError, match="duration"):
        parse_expiry("soon")


def test_cli_create_list_update(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--db", db, "--tenant", "acme", "--meta", "team=search",
                               "--expires", "30d", "--allow", "auto,gpt-mini", "--rpm", "600", "--max-parallel", "8",
                               "--format", "json"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)
    assert key["allow"] == ["auto", "gpt-mini"] and key["rpm"] == 600 and key["max_parallel"] == 8
    assert key["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=60)
    listed = runner.invoke(cli, ["keys", "list", "--db", db], env={"COLUMNS": "250"}, catch_exceptions=False)
    header, row = listed.stdout.splitlines()[:2]
    for col in ("METADATA", "ALLOW", "LIMITS", "EXPIRES"):
        assert col in header
    assert "team=search" in row and "auto,gpt-mini" in row and "rpm=600 parallel=8" in row
    updated = runner.invoke(cli, ["keys", "update", "--db", db, key["id"], "--allow-any", "--rpm", "0", "--expires",
                                  "never", "--meta", "cost_center=42", "--format", "json"], catch_exceptions=False)
    assert updated.exit_code == 0, updated.output
    now = json.loads(updated.stdout)
    assert (now["allow"], now["rpm"], now["expires_at"], now["max_parallel"]) == ([], None, None, 8)
    assert now["metadata"] == {"team": "search", "cost_center": 42}
    nothing = runner.invoke(cli, ["keys", "update", "--db", db, key["id"]])
    assert nothing.exit_code == 2 and "nothing to change" in nothing.stderr
    unknown = runner.invoke(cli, ["keys", "update", "--db", db, "key_nope", "--rpm", "5"])
    assert unknown.exit_code == 1 and "no key" in unknown.stderr


@pytest.fixture
def keyed(fake: FakeVendorServer, tmp_path: Path) -> Iterator[tuple[ServerThread, KeyStore]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    store = KeyStore(tmp_path / "keys.db")
    with ServerThread(ServeConfig(policy=str(policy), keys_db=store.path, reload_interval_s=0,
                                  keys_refresh_s=0.02)) as s:
        yield s, store
    store.close()


def _chat(s: ServerThread, key: str, model: str = "auto", **body: object) -> httpx.Response:
    return httpx.post(s.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "messages": MSG, "max_tokens": 10, **body})


def test_allow_list_expiry_and_rpm_are_enforced(keyed: tuple[ServerThread, KeyStore]) -> None:
    s, store = keyed
    _, pinned = store.create("acme", allow=["gpt-mini"])
    _, expired = store.create("acme", expires_at=time.time() - 1)
    _, slow = store.create("acme", rpm=2)
    s.service.auth.refresh(force=True)
    refused = _chat(s, pinned)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert "gpt-mini" in refused.json()["error"]["message"]
    assert _chat(s, pinned, "gpt-mini").status_code == 200
    gone = _chat(s, expired)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "expired_api_key"
    statuses = [_chat(s, slow).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = _chat(s, slow)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded" and int(limited.headers["retry-after"]) >= 1


def test_max_parallel_refuses_a_second_request_in_flight(keyed: tuple[ServerThread, KeyStore],
                                                          fake: FakeVendorServer) -> None:
    s, store = keyed
    _, key = store.create("acme", max_parallel=1)
    s.service.auth.refresh(force=True)
    fake.script("openai", Fault("timeout", delay_s=2.0))  # the vendor holds the first request a while
    first: list[httpx.Response] = []
    t = threading.Thread(target=lambda: first.append(_chat(s, key, stream=True)))
    t.start()
    while fake.calls("openai") < 1:  # the first request is at the vendor: its slot is taken
        time.sleep(0.01)
    second = _chat(s, key)
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_parallel_requests"
    t.join(timeout=30)
    assert first[0].status_code == 200 and "data: [DONE]" in first[0].text
    assert _chat(s, key).status_code == 200  # the stream ended: its slot is free


def test_admin_api(fake: FakeVendorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    KeyStore(tmp_path / "keys.db").close()
    config = ServeConfig(policy=str(policy), keys_db=str(tmp_path / "keys.db"), reload_interval_s=0)
    with ServerThread(config) as s:  # no admin key in the environment: the API is off and says so
        off = httpx.get(s.url + "/admin/keys")
        assert off.status_code == 404 and "ENGINE_ADMIN_KEY" in off.json()["error"]["message"]
    monkeypatch.setenv("ENGINE_ADMIN_KEY", ADMIN)
    admin = {"authorization": f"Bearer {ADMIN}"}
    with ServerThread(config) as s:
        assert httpx.get(s.url + "/admin/keys", headers={"authorization": "Bearer wrong"}).status_code == 401
        made = httpx.post(s.url + "/admin/keys", headers=admin,
                          json={"tenant": "acme", "name": "ci", "metadata": {"team": "x"}, "expires": "7d",
                                "allow": ["auto"], "rpm": 100, "quota": {"window": "day", "requests": 50}})
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["key"].startswith("sk-rt-") and key["quota"] == {"window": "day", "requests": 50}
        assert _chat(s, key["key"]).status_code == 200  # usable at once
        listed = httpx.get(s.url + "/admin/keys", headers=admin).json()["keys"]
        assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
        patched = httpx.patch(s.url + f"/admin/keys/{key['id']}", headers=admin, json={"allow": ["gpt-mini"]})
        assert patched.status_code == 200 and patched.json()["allow"] == ["gpt-mini"]
        assert _chat(s, key["key"]).status_code == 403  # the change applies at once
        bad = httpx.patch(s.url + f"/admin/keys/{key['id']}", headers=admin, json={"tenant": "other"})
        assert bad.status_code == 400
        assert httpx.post(s.url + "/admin/keys", headers=admin, json={"tier": "x"}).status_code == 400
        assert httpx.get(s.url + "/admin/keys/key_missing", headers=admin).status_code == 404
        revoked = httpx.delete(s.url + f"/admin/keys/{key['id']}", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        assert _chat(s, key["key"], "gpt-mini").status_code == 401
        assert httpx.get(s.url + "/admin/keys?all=true", headers=admin).json()["keys"][0]["id"] == key["id"]
