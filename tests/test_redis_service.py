"""`engine serve` on the Redis backend: 429 `rate_limit_exceeded` for tenant limits, the state in /readyz and
/metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.server.config import ServeConfig
from tests.redis_fixture import RedisServer
from tests.test_serve_support import ServerThread

POLICY = """
version: 1
providers:
  p: {{adapter: simulated, time_scale: 0}}
models:
  m: {{provider: p, price: {{input: 1, output: 2}}, context_window: 8000}}
routes:
  - {{name: default}}
quotas:
  - {{name: tenant-requests, scope: [tenant], window: day, limit: {{requests: 1000}}}}
limits:
  - {{name: tenant-rpm, scope: [tenant], rpm: 3}}
state: {{backend: redis, url: "{url}", timeout_ms: 2000, retry_s: 0.2}}
"""
BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}


@pytest.fixture
def server(redis_server: RedisServer, tmp_path: Path) -> Iterator[ServerThread]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=redis_server.url))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0, log_db=str(tmp_path / "log.db"))) as s:
        yield s


def test_tenant_rpm_is_a_429_rate_limit_exceeded_with_retry_after(server: ServerThread) -> None:
    answers = [httpx.post(server.url + "/v1/chat/completions", json=BODY, timeout=20) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    err = answers[3].json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
    assert "tenant-rpm" in err["message"] and "tenant=anonymous" in err["message"]
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60


def test_state_in_readyz_and_metrics_and_503_when_redis_is_down(server: ServerThread,
                                                               redis_server: RedisServer) -> None:
    assert httpx.post(server.url + "/v1/chat/completions", json=BODY, timeout=20).status_code == 200
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["state"]["backend"] == "redis" and ready["state"]["connected"] is True
    assert ready["state"]["url"] == redis_server.url  # no credentials in it to hide here
    metrics = httpx.get(server.url + "/metrics").text
    assert 'llm_router_state_backend_up{backend="redis"} 1.0' in metrics

    redis_server.stop()
    down = httpx.post(server.url + "/v1/chat/completions", json=BODY, timeout=20)
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "state_unavailable"
    assert "retry-after" in down.headers
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["state"]["connected"] is False
    assert ready.json()["state"]["last_error"]
    metrics = httpx.get(server.url + "/metrics").text
    assert 'llm_router_state_backend_up{backend="redis"} 0.0' in metrics
