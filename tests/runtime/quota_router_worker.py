"""One process of the multi-process quota test: a Router on the shared SQLite file."""

from __future__ import annotations

import asyncio
import sys

from engine.errors import QuotaExceeded
from engine.runtime.router import Router
from tests.runtime.conftest import make_policy, sims
from tests.runtime.test_quota_processes import QUOTA_POLICY


async def main(db: str, n: int, tenant: str) -> None:
    policy = make_policy(base=QUOTA_POLICY)
    router = Router(policy, log_path=db, adapters=sims(policy))
    sem = asyncio.Semaphore(50)
    ok = refused = 0

    async def one(i: int) -> None:
        nonlocal ok, refused
        async with sem:
            try:
                await router.generate(f"request {i} from {tenant}", max_tokens=100, meta={"tenant": "shared"})
                ok += 1
            except QuotaExceeded:
                refused += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    await router.aclose()
    print(ok, refused)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
