"""Keys, tenants, per-tenant cache and quotas, and the `engine keys` commands."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from engine.cli.app import cli
from engine.server.config import ServeConfig
from engine.server.keystore import KeyQuota, KeyStore, hash_key
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServerThread, fake_policy

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]

TENANT_POLICY_EXTRA = """
cache: {enabled: true, ttl_s: 600, max_entries: 100, scope: tenant, when: "temperature == 0"}
quotas:
  - {name: tenant-requests, scope: [tenant], window: day, limit: {requests: 3}, on_exceed: reject}
"""
TIER_ROUTES = """
routes:
  - name: premium
    when: "meta.tier == 'premium'"
    strategy: ordered
    candidates: [claude]
  - name: default
    strategy: ordered
    candidates: [gpt-mini, claude]
"""


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[KeyStore]:
    store = KeyStore(tmp_path / "keys.db")
    yield store
    store.close()


@pytest.fixture
def server(fake: FakeVendorServer, tmp_path: Path, keys: KeyStore) -> Iterator[ServerThread]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake, extra=TENANT_POLICY_EXTRA, routes=TIER_ROUTES))
    config = ServeConfig(policy=str(policy), keys_db=keys.path, reload_interval_s=0, keys_refresh_s=0.02)
    with ServerThread(config) as s:
        yield s


def client(server: ServerThread, key: str) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def wait_until(check: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_key_is_stored_hashed_and_shown_once(keys: KeyStore) -> None:
    info, secret = keys.create("acme", tier="premium", metadata={"team": "search"})
    assert secret.startswith("sk-rt-") and len(secret) > 40
    files = [Path(keys.path), Path(keys.path + "-wal")]
    raw = b"".join(f.read_bytes() for f in files if f.exists())
    assert secret.encode() not in raw and hash_key(secret).encode() in raw
    assert keys.active()[hash_key(secret)].id == info.id
    assert secret not in json.dumps(info.as_dict())
    assert all(secret not in json.dumps(k.as_dict()) for k in keys.keys())


def test_missing_wrong_and_revoked_keys_are_401(server: ServerThread, keys: KeyStore) -> None:
    info, secret = keys.create("acme")
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "auto", "messages": MSG})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, "sk-rt-not-a-real-key-000000000000").chat.completions.create(model="auto", messages=MSG)  # type: ignore[arg-type]
    assert e.value.code == "invalid_api_key" and "sk-rt-not-a-real-key" not in e.value.message
    assert wait_until(lambda: httpx.get(server.url + "/v1/models",
                                        headers={"authorization": f"Bearer {secret}"}).status_code == 200)
    assert client(server, secret).chat.completions.create(model="auto", messages=MSG).choices  # type: ignore[arg-type]
    other = KeyStore(keys.path)  # as `engine keys revoke` would, from another process
    other.revoke(info.id)
    other.close()
    assert wait_until(lambda: httpx.get(server.url + "/v1/models",
                                        headers={"authorization": f"Bearer {secret}"}).status_code == 401)


def _fresh(server: ServerThread, keys: KeyStore, tenant: str, **kw: object) -> str:
    _, secret = keys.create(tenant, **kw)  # type: ignore[arg-type]
    assert wait_until(lambda: httpx.get(server.url + "/v1/models",
                                        headers={"authorization": f"Bearer {secret}"}).status_code == 200)
    return secret


def test_cache_is_per_tenant(server: ServerThread, keys: KeyStore, fake: FakeVendorServer) -> None:
    a, b = _fresh(server, keys, "tenant-a"), _fresh(server, keys, "tenant-b")
    first = client(server, a).chat.completions.with_raw_response.create(model="auto", messages=MSG, temperature=0)  # type: ignore[arg-type]
    again = client(server, a).chat.completions.with_raw_response.create(model="auto", messages=MSG, temperature=0)  # type: ignore[arg-type]
    assert (first.headers["x-router-cached"], again.headers["x-router-cached"]) == ("false", "true")
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert fake.calls("openai") == 1
    other = client(server, b).chat.completions.with_raw_response.create(model="auto", messages=MSG, temperature=0)  # type: ignore[arg-type]
    assert other.headers["x-router-cached"] == "false" and fake.calls("openai") == 2


def test_policy_quota_is_per_tenant(server: ServerThread, keys: KeyStore) -> None:
    a, b = _fresh(server, keys, "quota-a"), _fresh(server, keys, "quota-b")
    for _ in range(3):
        client(server, a).chat.completions.create(model="auto", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as e:
        client(server, a).chat.completions.create(model="auto", messages=MSG)  # type: ignore[arg-type]
    assert e.value.code == "insufficient_quota" and "tenant-requests" in e.value.message
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert client(server, b).chat.completions.create(model="auto", messages=MSG).choices  # type: ignore[arg-type]


def test_key_quota_refuses_past_its_budget(server: ServerThread, keys: KeyStore) -> None:
    limited = _fresh(server, keys, "key-quota", quota=KeyQuota(window="hour", requests=1))
    assert client(server, limited).chat.completions.create(model="auto", messages=MSG).choices  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as e:
        client(server, limited).chat.completions.create(model="auto", messages=MSG, stream=True)  # type: ignore[arg-type]
    assert e.value.code == "insufficient_quota" and "key" in e.value.message


def test_tier_comes_from_the_key_not_the_client(server: ServerThread, keys: KeyStore, fake: FakeVendorServer) -> None:
    premium = _fresh(server, keys, "tiers", tier="premium")
    free = _fresh(server, keys, "tiers", tier="free")
    assert client(server, premium).chat.completions.create(model="auto", messages=MSG).model == "claude"  # type: ignore[arg-type]
    spoof = client(server, free).chat.completions.create(model="auto", messages=MSG,  # type: ignore[arg-type]
                                                           metadata={"tier": "premium", "tenant": "victim"})
    assert spoof.model == "gpt-mini"
    explained = httpx.post(server.url + "/v1/explain", headers={"authorization": f"Bearer {free}"},
                           json={"model": "auto", "messages": MSG, "metadata": {"tier": "premium"}}).json()
    assert explained["features"]["meta"]["tier"] == "free" and explained["features"]["meta"]["tenant"] == "tiers"


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--db", db, "--tenant", "acme", "--tier", "gold", "--name", "ci",
                               "--meta", "team=search", "--quota-requests", "10", "--format", "json"],
                         catch_exceptions=False)
    assert made.exit_code == 0
    created = json.loads(made.stdout)
    assert created["key"].startswith("sk-rt-") and created["quota"] == {"window": "day", "requests": 10}
    listed = runner.invoke(cli, ["keys", "list", "--db", db], catch_exceptions=False)
    assert listed.exit_code == 0 and created["id"] in listed.stdout and "acme" in listed.stdout
    assert created["key"] not in listed.stdout
    revoked = runner.invoke(cli, ["keys", "revoke", "--db", db, created["id"]], catch_exceptions=False)
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert runner.invoke(cli, ["keys", "list", "--db", db, "--format", "json"]).stdout.strip() == "[]"
    again = runner.invoke(cli, ["keys", "revoke", "--db", db, created["id"]])
    assert again.exit_code == 1 and "no active key" in again.stderr
    bad = runner.invoke(cli, ["keys", "create", "--db", db, "--tenant", "x", "--meta", "tier=gold"])
    assert bad.exit_code == 2 and "tier" in bad.stderr


def test_serve_refuses_open_public_address(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2 and "--db" in result.stderr
