"""Graceful shutdown under load: in-flight requests finish, and every one of them has its log row."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServeProcess, fake_policy

N = 24


async def _one(client: httpx.AsyncClient, url: str, i: int) -> tuple[int, str | None, bool]:
    body = {"model": "auto", "messages": [{"role": "user", "content": f"request number {i}"}], "stream": i % 3 == 0}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        text = "".join([chunk async for chunk in r.aiter_text()])
    complete = text.rstrip().endswith("data: [DONE]") if body["stream"] else text.endswith("}")
    return r.status_code, r.headers.get("x-request-id"), complete


def test_sigterm_finishes_in_flight_requests_and_logs_them_all(fake: FakeVendorServer, tmp_path: Path) -> None:
    log = tmp_path / "decisions.db"
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake, log=str(log)))
    fake.configure(latency_ms=700)
    results: list[tuple[int, str | None, bool]] = []

    async def load(url: str) -> None:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=N)) as client:
            results.extend(await asyncio.gather(*(_one(client, url, i) for i in range(N))))

    with ServeProcess("--policy", str(policy), "--grace", "20") as serve:
        assert serve.proc is not None
        t = threading.Thread(target=lambda: asyncio.run(load(serve.url)))
        t.start()
        deadline = time.monotonic() + 20
        while fake.calls() < N and time.monotonic() < deadline:  # every request is at the vendor
            time.sleep(0.01)
        assert fake.calls() == N
        serve.proc.terminate()  # SIGTERM while all N are in flight
        t.join(timeout=30)
        # uvicorn re-raises the signal once shut down, so the exit status says "terminated by SIGTERM"
        assert serve.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert serve.wait_for_output("Application shutdown complete")
    assert len(results) == N
    assert all(status == 200 and complete for status, _, complete in results), results
    db = sqlite3.connect(log)
    rows = {rid: outcome for rid, outcome in db.execute("select id, outcome from requests")}
    db.close()
    assert len(rows) == N and set(rows.values()) == {"served"}
    assert {rid for _, rid, _ in results if rid} <= set(rows)
