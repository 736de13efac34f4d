"""One router process of the Redis multi-process tests: N concurrent requests, its own decision log.

Usage: python -m tests.redis_router_worker POLICY_FILE LOG_DB N TAG [PAUSE_EVERY]
Prints one JSON object: counts per outcome and per serving model.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from engine.errors import AllModelsFailed, QuotaExceeded, RateLimitExceeded, StateUnavailable
from engine.policy.api import load_policy
from engine.runtime.router import Router
from tests.runtime.conftest import sims


async def main(policy_file: str, db: str, n: int, tag: str, spread_s: float) -> None:
    policy = load_policy(policy_file)
    router = Router(policy, log_path=db, adapters=sims(policy))
    counts: dict[str, int] = {}
    slowest = 0.0

    def bump(k: str) -> None:
        counts[k] = counts.get(k, 0) + 1

    async def one(i: int) -> None:
        nonlocal slowest
        if spread_s:
            await asyncio.sleep(spread_s * i / n)  # a steady stream instead of one burst
        t0 = time.monotonic()
        try:
            r = await router.generate(f"request {i} from {tag}", max_tokens=100, meta={"tenant": "shared"})
            bump("ok")
            bump(f"model:{r.model}")
        except StateUnavailable:
            bump("state_unavailable")
        except QuotaExceeded:
            bump("quota_exceeded")
        except RateLimitExceeded:
            bump("rate_limited")
        except AllModelsFailed:
            bump("all_failed")
        slowest = max(slowest, time.monotonic() - t0)

    await asyncio.gather(*(one(i) for i in range(n)))
    await router.aclose()
    counts["slowest_ms"] = int(slowest * 1000)
    print(json.dumps(counts))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4],
                     float(sys.argv[5]) if len(sys.argv) > 5 else 0.0))
