"""One process of the multi-process quota test (started with the `spawn` method).

Runs `tasks` concurrent asyncio tasks over a shared SQLite file; each task does `per_task`
reserve -> settle rounds and reports every attempt through a queue. Lives in its own module so
that spawned children can import it by name.
"""

from __future__ import annotations

import asyncio
import random
import traceback
from typing import Any

from engine.errors import QuotaExceeded
from engine.policy.model import Quota, QuotaLimit
from engine.runtime.clock import ManualClock
from engine.runtime.quotas import QuotaContext, QuotaManager

START = 1_717_200_000.0  # 2024-06-01 00:00 UTC; every process sees the same windows
TENANTS = ("exact", "noisy", "many")
"""exact: actual usage in [50%, 100%] of the estimate (a worst-case estimate, as the router makes);
noisy: actual in [50%, 150%]; many: tiny requests, so that the request count binds."""
USD_PER_TOKEN = {"exact": 1e-6, "noisy": 2e-5, "many": 1e-6}
SCENARIOS = {
    # every request of every process hits one row whose request cap binds
    "hot": (
        Quota(name="global", scope=(), window="minute", limit=QuotaLimit(requests=100)),
        Quota(
            name="per-tenant",
            scope=("tenant",),
            window="day",
            limit=QuotaLimit(requests=10**6, tokens=10**9, cost_usd=1e6),
        ),
    ),
    # one quota per tenant; a different measure binds for each tenant:
    # exact -> tokens, noisy -> cost_usd, many -> requests
    "measures": (
        Quota(
            name="per-tenant",
            scope=("tenant",),
            window="day",
            limit=QuotaLimit(requests=40, tokens=3000, cost_usd=0.05),
        ),
    ),
}


def _estimate(rng: random.Random, tenant: str) -> tuple[int, int]:
    """(estimated tokens, actual tokens) for one request."""
    est = {"exact": rng.randint(100, 300), "noisy": rng.randint(50, 150), "many": rng.randint(1, 5)}[tenant]
    high = 1.5 if tenant == "noisy" else 1.0
    return est, round(est * rng.uniform(0.5, high))


async def _task(mgr: QuotaManager, rng: random.Random, first: int, count: int, out: list[dict[str, Any]]) -> None:
    for i in range(first, first + count):
        tenant = TENANTS[i % len(TENANTS)]
        est, actual = _estimate(rng, tenant)
        rate = USD_PER_TOKEN[tenant]
        ctx = QuotaContext(tenant, None, "m", "p")
        try:
            res = await mgr.areserve(ctx, est, est * rate)
        except QuotaExceeded as e:
            out.append({"tenant": tenant, "admitted": False, "quota": e.quota, "measure": e.measure})
            continue
        for _ in range(rng.randint(0, 3)):  # let other tasks reserve while this one is "in flight"
            await asyncio.sleep(0)
        await mgr.asettle(res, actual, actual * rate)
        out.append(
            {
                "tenant": tenant,
                "admitted": True,
                "est_tokens": est,
                "est_cost": est * rate,
                "actual_tokens": actual,
                "actual_cost": actual * rate,
                "buckets": [
                    (b.quota, b.scope_key, b.admitted.requests, b.admitted.tokens, b.admitted.cost_usd)
                    for b in res.buckets
                ],
            }
        )


async def _main(path: str, scenario: str, worker: int, tasks: int, per_task: int) -> list[dict[str, Any]]:
    mgr = QuotaManager(SCENARIOS[scenario], path=path, clock=ManualClock(START))
    out: list[dict[str, Any]] = []
    try:
        await asyncio.gather(
            *(
                _task(mgr, random.Random(worker * 1000 + t), (worker * tasks + t) * per_task, per_task, out)
                for t in range(tasks)
            )
        )
    finally:
        mgr.close()
    return out


def run(path: str, scenario: str, worker: int, tasks: int, per_task: int, barrier: Any, queue: Any) -> None:
    """Process entry point: wait for the others, run, put (worker, attempts | traceback) on `queue`."""
    try:
        barrier.wait(timeout=60)
        queue.put((worker, asyncio.run(_main(path, scenario, worker, tasks, per_task))))
    except BaseException:
        queue.put((worker, traceback.format_exc()))
