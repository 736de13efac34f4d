"""The fake-keys scenario of `engine serve`: real-vendor-shaped providers that cannot answer.

OpenAI on a loopback port nobody listens on (refused), Anthropic on a host name that cannot
resolve (`.invalid`, answered locally), Gemini on the fake with its invalid-key error. Every
answer must be a short, readable error with `x-request-id`, and the log must hold one line per
failed request (and per circuit opened).
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.server.config import ServeConfig
from engine.server.keystore import KeyStore
from engine.server.logs import JsonFormatter, TextFormatter
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServerThread

MSG = [{"role": "user", "content": "Say hello to the router"}]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there any more: connecting is refused
    return int(port)


def fake_keys_policy(fake: FakeVendorServer, log: Path, *, min_requests: int = 1000) -> str:
    return f"""version: 1
providers:
  openai: {{adapter: openai, api_key: sk-proj-FAKEFAKEFAKE0123456789, base_url: 'http://127.0.0.1:{_closed_port()}/v1',
            timeout_s: 5}}
  anthropic: {{adapter: anthropic, api_key: sk-ant-api03-FAKEFAKE0123456789, base_url: 'https://api.nonexistent.invalid',
               timeout_s: 5}}
  gemini: {{adapter: gemini, api_key: AIzaFAKEFAKEFAKE0123456789abcdefghij,
            base_url: '{fake.channel_url("badkey", "gemini")}', timeout_s: 5}}
models:
  gpt-4o-mini: {{provider: openai, price: {{input: 0.15, output: 0.6}}, context_window: 128000, scores: {{chat: 4}}}}
  claude-haiku-4-5: {{provider: anthropic, price: {{input: 1, output: 5}}, context_window: 200000, scores: {{chat: 4}}}}
  gemini-2.5-flash: {{provider: gemini, price: {{input: 0.3, output: 2.5}}, context_window: 1000000,
                     scores: {{chat: 4}}}}
routes:
  - name: default
    strategy: ordered
    candidates: [gpt-4o-mini, claude-haiku-4-5, gemini-2.5-flash]
retry: {{max_attempts: 3, backoff_ms: 1, max_backoff_ms: 2}}
deadline_s: 20
health: {{min_requests: {min_requests}, open_circuit: {{error_rate: 0.5, cooldown_s: 600}}}}
log: {{sqlite: '{log}', prompts: hash}}
"""


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="engine"):
        yield caplog


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def test_fake_keys_answer_short_503s_with_request_ids_and_one_log_line_each(
        fake: FakeVendorServer, tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    fake.set_mode("badkey", "auth")
    policy, db = tmp_path / "policy.yaml", tmp_path / "decisions.db"
    policy.write_text(fake_keys_policy(fake, db))
    answers = []
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        for _ in range(2):
            answers.append(httpx.post(s.url + "/v1/chat/completions", json={"model": "auto", "messages": MSG},
                                      timeout=30))
    for r in answers:
        assert r.status_code == 503
        err = r.json()["error"]
        assert err["code"] == "all_models_failed"
        message = err["message"]
        assert len(message) < 600, message
        for needle in ("gpt-4o-mini", "connection refused", "claude-haiku-4-5", "does not resolve (DNS)",
                       "gemini-2.5-flash", "AuthError"):
            assert needle in message
        for leak in ("object at 0x", "SSLContext", "Traceback", "sk-proj-FAKE", "sk-ant-api03", "AIzaFAKE"):
            assert leak not in message
    ids = [r.headers["x-request-id"] for r in answers]
    assert len(set(ids)) == 2

    failed = _events(logs, "request_failed")
    assert [r.fields["request_id"] for r in failed] == ids  # one line per failed request
    assert all(r.levelno == logging.ERROR and r.fields["status"] == 503 for r in failed)

    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("select id, outcome from requests").fetchall())
        attempts = conn.execute("select request_id, model, error_class from attempts order by id").fetchall()
    assert set(rows) == set(ids)  # the header is the decision log's id
    dns = [cls for rid, m, cls in attempts if rid == ids[0] and m == "claude-haiku-4-5"]
    assert dns == ["ConnectionFailed", "ConnectionFailed"]  # its own class, retried once, not 3 times
    assert not any(cls == "ServerError" for _, _, cls in attempts)
    auth = [cls for rid, m, cls in attempts if rid == ids[0] and m == "gemini-2.5-flash"]
    assert auth == ["AuthError"]  # a bad key is not retried at all


def test_circuit_openings_are_logged_once_each(fake: FakeVendorServer, tmp_path: Path,
                                               logs: pytest.LogCaptureFixture) -> None:
    fake.set_mode("badkey", "auth")
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_keys_policy(fake, tmp_path / "d.db", min_requests=2))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        statuses = [httpx.post(s.url + "/v1/chat/completions", json={"model": "auto", "messages": MSG},
                               timeout=30).status_code for _ in range(3)]
    assert statuses[0] == 503 and statuses[-1] == 503
    opened = _events(logs, "circuit_open")
    assert sorted(r.fields["model"] for r in opened) == [
        "claude-haiku-4-5", "gemini-2.5-flash", "gpt-4o-mini"]
    assert all(r.levelno == logging.WARNING for r in opened)
    # the third request found every circuit open: refused, logged as one more failed request
    assert len(_events(logs, "request_failed")) == 3


def test_refused_and_bad_requests_carry_request_ids_and_log_lines(
        fake: FakeVendorServer, tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_keys_policy(fake, tmp_path / "d.db"))
    keys = tmp_path / "keys.db"
    KeyStore(keys).close()
    with ServerThread(ServeConfig(policy=str(policy), keys_db=str(keys), reload_interval_s=0)) as s:
        unauthorized = httpx.post(s.url + "/v1/chat/completions", json={"model": "auto", "messages": MSG},
                                  headers={"authorization": "Bearer sk-rt-wrong"})
        health = httpx.get(s.url + "/healthz")
    assert unauthorized.status_code == 401 and unauthorized.headers["x-request-id"]
    assert health.headers["x-request-id"]
    [line] = _events(logs, "request_failed")
    assert line.fields["request_id"] == unauthorized.headers["x-request-id"]
    assert line.fields["code"] == "invalid_api_key"
    assert "sk-rt-wrong" not in line.getMessage()


def test_log_lines_are_json_or_text_with_the_event_fields(logs: pytest.LogCaptureFixture) -> None:
    from engine.server.logs import log_event

    log = logging.getLogger("engine.server")
    log_event(log, logging.ERROR, "request_failed", "all models failed (2 attempts): m: Timeout",
              request_id="r1", status=503, model=None, tenant="acme corp")
    [record] = _events(logs, "request_failed")
    data = json.loads(JsonFormatter().format(record))
    assert data["event"] == "request_failed" and data["level"] == "error" and data["logger"] == "engine.server"
    assert data["request_id"] == "r1" and data["status"] == 503 and "model" not in data
    assert data["message"].startswith("all models failed")
    text = TextFormatter().format(record)
    assert text.endswith('all models failed (2 attempts): m: Timeout (request_failed request_id=r1 status=503 '
                         'tenant="acme corp")')


def test_a_quota_refusal_is_one_quota_refused_line(fake: FakeVendorServer, tmp_path: Path,
                                                   logs: pytest.LogCaptureFixture) -> None:
    from tests.test_serve_support import fake_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake, extra="quotas:\n  - {name: tiny, scope: [tenant], window: day, "
                                              "limit: {cost_usd: 0.01}, on_exceed: reject}\n"))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        r = httpx.post(s.url + "/v1/chat/completions", timeout=30,
                       json={"model": "auto", "messages": MSG, "max_tokens": 100_000})
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    [line] = _events(logs, "quota_refused")
    assert line.fields["request_id"] == r.headers["x-request-id"] and line.levelno == logging.WARNING
    assert "tiny" in line.getMessage() and not _events(logs, "request_failed")


def test_boolean_settings_travel_to_workers() -> None:
    config = ServeConfig(policy="p.yaml", otel=True, ready_check_s=30.0)
    assert ServeConfig.from_env(config.to_env()) == config
    assert ServeConfig.from_env(ServeConfig(policy="p.yaml").to_env()).otel is False
