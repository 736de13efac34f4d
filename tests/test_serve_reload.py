"""Hot reload under load: a valid policy is swapped in, an invalid one refused, in-flight requests finish
on the policy they started with; SIGHUP reloads, also across workers."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServeProcess, ServerThread, fake_policy, write_policy

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Route me somewhere"}]
TO_CLAUDE = """
routes:
  - name: default
    strategy: ordered
    candidates: [claude, gpt-mini]
"""
BROKEN = """
routes:
  - name: default
    strategy: ordered
    candidates: [claud, gpt-mini]
"""


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def ready(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + "/readyz").json()["policy"]
    return body


class Load:
    """Clients sending requests without pause from a thread until stopped (bounded by `limit`)."""

    def __init__(self, url: str, *, concurrency: int = 6, limit: int = 3000) -> None:
        self.url, self.concurrency, self.limit = url, concurrency, limit
        self.models: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        client = AsyncOpenAI(base_url=self.url + "/v1", api_key="x", max_retries=0)

        async def worker(i: int) -> None:
            while not self._stop.is_set() and len(self.models) + len(self.errors) < self.limit:
                try:
                    if i % 2:
                        r = await client.chat.completions.create(model="auto", messages=MSG)  # type: ignore[arg-type]
                        self.models.append(r.model)
                    else:
                        chunks = [c async for c in await client.chat.completions.create(
                            model="auto", messages=MSG, stream=True)]  # type: ignore[arg-type]
                        assert chunks[-1].choices[0].finish_reason == "stop"
                        self.models.append(chunks[0].model)
                except Exception as e:
                    self.errors.append(repr(e))

        await asyncio.gather(*(worker(i) for i in range(self.concurrency)))
        await client.close()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_reload_under_load_swaps_valid_and_refuses_invalid(fake: FakeVendorServer, tmp_path: Path) -> None:
    log = tmp_path / "decisions.db"
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake, log=str(log)))
    config = ServeConfig(policy=str(policy), reload_interval_s=0.05)
    with ServerThread(config) as server, Load(server.url) as load:
        v1 = ready(server.url)
        assert wait_until(lambda: len(load.models) >= 20)
        write_policy(policy, fake_policy(fake, log=str(log), routes=TO_CLAUDE))
        assert wait_until(lambda: ready(server.url)["generation"] == 2)
        v2 = ready(server.url)
        assert v2["digest"] != v1["digest"] and v2["reloads"] == 1
        seen = len(load.models)
        assert wait_until(lambda: len(load.models) >= seen + 20)
        write_policy(policy, fake_policy(fake, log=str(log), routes=BROKEN))
        assert wait_until(lambda: ready(server.url)["rejected"] == 1)
        after = ready(server.url)
        assert after["digest"] == v2["digest"] and "claud" in str(after["last_error"])
        seen = len(load.models)
        assert wait_until(lambda: len(load.models) >= seen + 20)
        newest = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="auto", messages=MSG)  # type: ignore[arg-type]
        assert newest.model == "claude"
    assert load.errors == []
    assert set(load.models) == {"gpt-mini", "claude"}
    first_claude = load.models.index("claude")
    # requests that started before the swap may finish after it, at most one per client
    assert "gpt-mini" not in load.models[first_claude + load.concurrency:]
    db = sqlite3.connect(log)
    kinds = [k for (k,) in db.execute("select kind from events order by id")]
    rows = db.execute("select count(*) from requests").fetchone()[0]
    db.close()
    assert kinds == ["policy_reloaded", "policy_rejected"]
    assert rows == len(load.models) + 1


def test_in_flight_request_finishes_on_its_policy(fake: FakeVendorServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    fake.configure(latency_ms=600)
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as server:
        old = ready(server.url)["digest"]
        result: dict[str, httpx.Response] = {}
        t = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
            server.url + "/v1/chat/completions", json={"model": "auto", "messages": MSG}, timeout=20)))
        t.start()
        assert wait_until(lambda: fake.calls("openai") == 1)  # the request is at the vendor now
        write_policy(policy, fake_policy(fake, routes=TO_CLAUDE))
        assert server.call(server.service.holder.reload("test")) is True
        fake.configure(latency_ms=0)
        fresh = httpx.post(server.url + "/v1/chat/completions", json={"model": "auto", "messages": MSG}, timeout=20)
        t.join(timeout=20)
        retired = server.service.holder._retired
        assert wait_until(lambda: not retired)  # the old router was closed once its request ended
    assert fresh.json()["model"] == "claude" and fresh.headers["x-router-policy"] != old[:12]
    assert result["r"].status_code == 200
    assert result["r"].json()["model"] == "gpt-mini" and result["r"].headers["x-router-policy"] == old[:12]


def test_sighup_reloads_single_and_multi_worker(fake: FakeVendorServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    for workers in ("1", "2"):
        n = int(workers)
        policy.write_text(fake_policy(fake))
        with ServeProcess("--policy", str(policy), "--reload-interval", "0", "--workers", workers) as serve:
            assert serve.proc is not None
            assert wait_until(lambda: _ok(serve.url), 30)
            assert wait_until(lambda: sum("Application startup complete" in line for line in serve.output)
                              == n, 30)  # noqa: B023
            before = str(ready(serve.url)["digest"])
            write_policy(policy, fake_policy(fake, routes=TO_CLAUDE))
            time.sleep(0.3)  # no watcher (--reload-interval 0): nothing may change without a signal
            assert ready(serve.url)["digest"] == before
            serve.proc.send_signal(signal.SIGHUP)
            # every worker answers with the new policy (each readyz may reach a different worker)
            assert wait_until(lambda: all(ready(serve.url)["digest"] != before for _ in range(8)), 30)  # noqa: B023
            assert wait_until(lambda: sum("policy reloaded" in line for line in serve.output) == n)  # noqa: B023
            answer = httpx.post(serve.url + "/v1/chat/completions", json={"model": "auto", "messages": MSG}).json()
            assert answer["model"] == "claude"
        assert not any("Child process" in line and "died" in line for line in serve.output)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz").status_code == 200
    except httpx.HTTPError:
        return False
