"""A router process whose model `m` always fails with a server error: it feeds the shared circuit.

Usage: python -m tests.redis_failing_worker POLICY_FILE N
"""

from __future__ import annotations

import asyncio
import sys

from engine.errors import AllModelsFailed
from engine.policy.api import load_policy
from engine.runtime.router import Router
from tests.runtime.conftest import sims


async def main(policy_file: str, n: int) -> None:
    policy = load_policy(policy_file)
    adapters = sims(policy)
    adapters["m"] = sims(policy, failure_rate=1.0, faults=["server_error"])["m"]
    router = Router(policy, log_path=None, adapters=adapters)
    failed = 0
    for i in range(n):
        try:
            await router.generate(f"failing {i}", max_tokens=10, model="m")
        except AllModelsFailed:
            failed += 1
    await router.aclose()  # sends the last outcomes
    print(failed)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
