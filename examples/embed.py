"""Embed the router in an application: route, stream, handle failures, send feedback.

    ENGINE_SIM_TIME_SCALE=0 python examples/embed.py            # the offline default policy
    python examples/embed.py --policy policies/production.example.yaml   # real vendors (keys set)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from engine import AllModelsFailed, QuotaExceeded, Router, RoutingRefused, StreamDone
from engine.policy.bundled import default_policy_path


async def main(policy: Path, log: Path) -> None:
    async with Router.from_file(policy, log_path=log) as router:
        # 1. a plain request: the policy picks the model
        r = await router.generate("Write a Python function that checks whether a number is prime.",
                                  max_tokens=300, meta={"tenant": "acme", "tier": "premium"})
        print(f"[{r.route} -> {r.model}] attempts={r.attempts} cost=${r.cost_usd:.6f} cached={r.cached}")
        print("   ", r.text[:100])

        # 2. a chat with a system prompt, streamed
        messages = [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Give me three names for a cat."}]
        async for event in router.stream(messages=messages, max_tokens=100, meta={"tenant": "acme"}):
            if isinstance(event, StreamDone):
                print(f"\n[stream served by {event.result.model} in {event.result.latency_ms:.0f} ms]")
            else:
                print(event.text, end="", flush=True)

        # 3. the same question twice at temperature 0: the second answer comes from the cache
        for _ in range(2):
            r = await router.generate("What is the capital of Portugal?", temperature=0, meta={"tenant": "acme"})
        print(f"cache hit: {r.cached}, saved a call to {r.model}")

        # 4. failures are explicit and typed
        try:
            await router.generate("Summarize this: " + "lorem ipsum " * 10, max_tokens=70_000)
        except RoutingRefused as e:
            print("refused:", str(e)[:120], "...")
        except (QuotaExceeded, AllModelsFailed) as e:
            print("failed:", e)

        # 5. tell the router how good an answer was (shown per model by `engine stats`)
        router.feedback(r.request_id, score=1.0, label="correct")
    print(f"decision log: {log}  (try: engine stats --db {log})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, default=default_policy_path())
    ap.add_argument("--log", type=Path, default=Path(tempfile.mkdtemp()) / "decisions.db")
    args = ap.parse_args()
    asyncio.run(main(args.policy, args.log))
