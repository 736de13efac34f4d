"""Circuits shared through Redis: one router's failures open the circuit in the others; one probe for all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from engine.policy.api import load_policy, load_policy_text
from engine.runtime.backends.redis_health import RedisHealth
from engine.runtime.router import Router
from tests.redis_fixture import RedisServer
from tests.runtime.conftest import sims

REPO = Path(__file__).resolve().parents[1]
POLICY = """
version: 1
providers:
  p: {{adapter: simulated}}
  q: {{adapter: simulated}}
models:
  m: {{provider: p, price: {{input: 1, output: 2}}, context_window: 8000}}
  n: {{provider: q, price: {{input: 2, output: 4}}, context_window: 8000}}
routes:
  - {{name: default, strategy: ordered, candidates: [m, n]}}
retry: {{max_attempts: 1}}
health: {{window_s: 60, min_requests: 5, open_circuit: {{error_rate: 0.5, cooldown_s: {cooldown}}}}}
state: {{backend: redis, url: "{url}", timeout_ms: 3000}}
"""


async def wait_for(cond: object, seconds: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        if cond():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_failures_in_one_process_open_the_circuit_in_another(redis_server: RedisServer,
                                                                   tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY.format(url=redis_server.url, cooldown=300))
    policy = load_policy(policy_file)
    router = Router(policy, log_path=None, adapters=sims(policy))
    try:
        first = await router.generate("before", max_tokens=10)
        assert first.model == "m"  # healthy so far
        out = subprocess.run([sys.executable, "-m", "tests.redis_failing_worker", str(policy_file), "8"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == 8
        # this router never saw m fail, yet skips it: the circuit is the shared one
        assert await wait_for(lambda: "m" in router.health.snapshot().open_circuits)
        assert "shared" in router.health.snapshot().open_circuits["m"]
        r = await router.generate("after", max_tokens=10)
        assert r.model == "n"
        assert router.health.state("m") == "open"
    finally:
        await router.aclose()


async def test_half_open_probe_is_sent_by_one_router_only(redis_server: RedisServer) -> None:
    policy = load_policy_text(POLICY.format(url=redis_server.url, cooldown=0.3), "p.yaml", env={})
    routers = [Router(policy, log_path=None, adapters=sims(policy)) for _ in range(3)]
    try:
        healths = [r.health for r in routers]
        assert all(isinstance(h, RedisHealth) for h in healths)
        for _ in range(6):
            healths[0].record("m", ok=False, latency_ms=5, error_class="ServerError")
        await healths[0].sync()  # type: ignore[attr-defined]
        for h in healths:
            await h.sync()  # type: ignore[attr-defined]
            assert h.state("m") == "open"
        await asyncio.sleep(0.4)  # the cooldown passes
        for h in healths:
            await h.sync()  # type: ignore[attr-defined]
        grants = await asyncio.gather(*(h.aallow("m") for h in healths for _ in range(3)))
        assert sum(grants) == 1  # nine asks over three routers, one probe
        prober = next(h for i, h in enumerate(healths) if any(grants[3 * i:3 * i + 3]))
        prober.record("m", ok=True, latency_ms=5)
        await prober.sync()  # type: ignore[attr-defined]
        for h in healths:
            await h.sync()  # type: ignore[attr-defined]
            assert h.state("m") == "closed"
            assert await h.aallow("m")
    finally:
        for r in routers:
            await r.aclose()
