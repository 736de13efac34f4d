"""What the router adds on top of the raw vendor SDK, measured in one run against the same
loopback fake (DESIGN.md targets), plus cache hits and the decision log.

    python benchmarks/router.py [--quick]

Rows: added latency per request (routed minus raw `openai` SDK call), CPU per request,
fallback machinery beyond the two vendor calls, streaming time to first chunk, exact-cache
hit latency, and the decision log's sustained rows/s with the event loop's worst stall.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import machine, write_section
from engine.policy.api import load_policy_text
from engine.runtime.router import Router
from tests.fakes import spawn_fake

POLICY = """
version: 1
providers:
  main: {{adapter: openai, api_key: sk-bench, base_url: "{main}"}}
  backup: {{adapter: openai, api_key: sk-bench, base_url: "{backup}"}}
models:
  m-main: {{provider: main, id: gpt-4o-mini, price: {{input: 0.15, output: 0.6}}, context_window: 128000}}
  m-backup: {{provider: backup, id: gpt-4o-mini, price: {{input: 0.15, output: 0.6}}, context_window: 128000}}
routes:
  - {{name: default, strategy: ordered, candidates: [m-main, m-backup]}}
retry: {{max_attempts: 1}}
health: {{min_requests: 1000000}}  # keep the failing model in the plan: we time the fallback path
cache: {{enabled: true, when: "temperature == 0"}}
log: {{sqlite: "{log}"}}
"""
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark, please."}]
TARGETS = {"added_ms": 0.3, "fallback_ms": 0.5, "ttfc_ms": 0.2, "cache_us": 30.0}


async def timed(fn: Any, n: int) -> tuple[list[float], float]:
    """(per-call wall ms, CPU ms per call)."""
    for _ in range(min(50, n)):
        await fn()
    gc.collect()
    out = []
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out, (time.process_time() - cpu0) * 1000 / n


async def measure(n: int, fake: Any) -> dict[str, Any]:
    import openai

    tmp = Path(tempfile.mkdtemp())
    fake.set_mode("down", "server_error")
    policy = load_policy_text(POLICY.format(main=fake.openai_url, backup=fake.channel_url("backup"),
                                            log=tmp / "bench.db"), "bench.yaml", env={})
    fallback_policy = load_policy_text(POLICY.format(main=fake.channel_url("down"), backup=fake.openai_url,
                                                     log=tmp / "fallback.db"), "bench.yaml", env={})
    raw = openai.AsyncOpenAI(api_key="sk-bench", base_url=fake.openai_url, max_retries=0)

    async def raw_call() -> None:
        await raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)  # type: ignore[arg-type]

    async def raw_stream_first() -> None:
        s = await raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=True)  # type: ignore[arg-type]
        async for _ in s:
            break
        await s.close()

    res: dict[str, Any] = {}
    async with Router(policy) as router, Router(fallback_policy) as fb:
        async def routed() -> None:
            await router.generate(messages=MESSAGES, max_tokens=50)

        async def routed_fallback() -> None:
            r = await fb.generate(messages=MESSAGES, max_tokens=50)
            assert r.model == "m-backup" and r.fallbacks == 1

        async def routed_stream_first() -> None:
            it = router.stream(messages=MESSAGES, max_tokens=50)
            async for _ in it:
                break
            await it.aclose()  # type: ignore[attr-defined]

        async def cache_hit() -> None:
            await router.generate(messages=MESSAGES, max_tokens=50, temperature=0)

        # interleave raw and routed rounds so drift on a shared machine hits both alike
        raw_ms: list[float] = []
        routed_ms: list[float] = []
        raw_cpu: list[float] = []
        routed_cpu: list[float] = []
        for _ in range(4):
            a, ca = await timed(raw_call, n // 4)
            b, cb = await timed(routed, n // 4)
            raw_ms += a
            routed_ms += b
            raw_cpu.append(ca)
            routed_cpu.append(cb)
        fb_ms, _ = await timed(routed_fallback, max(50, n // 4))
        raw_first, _ = await timed(raw_stream_first, max(50, n // 4))
        routed_first, _ = await timed(routed_stream_first, max(50, n // 4))
        await cache_hit()
        hits = []
        for _ in range(n):
            t = time.perf_counter()
            await cache_hit()
            hits.append((time.perf_counter() - t) * 1e6)
        raw_p50 = statistics.median(raw_ms)
        res = {
            "raw_p50_ms": raw_p50, "routed_p50_ms": statistics.median(routed_ms),
            "added_ms": statistics.median(routed_ms) - raw_p50,
            "raw_cpu_ms": statistics.median(raw_cpu), "routed_cpu_ms": statistics.median(routed_cpu),
            "fallback_p50_ms": statistics.median(fb_ms),
            "fallback_machinery_ms": statistics.median(fb_ms) - 2 * raw_p50,
            "raw_ttfc_ms": statistics.median(raw_first), "routed_ttfc_ms": statistics.median(routed_first),
            "ttfc_added_ms": statistics.median(routed_first) - statistics.median(raw_first),
            "cache_hit_p50_us": statistics.median(hits), "cache_hit_p99_us": sorted(hits)[int(0.99 * len(hits))],
            "n": n,
        }
    await raw.close()
    return res


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def report(r: dict[str, Any], log: dict[str, Any] | None) -> str:
    lines = [
        "| measure | value | target | |", "|---|---:|---:|---|",
        f"| raw openai SDK call, p50 | {r['raw_p50_ms']:.3f} ms | | |",
        f"| routed call (Router.generate, same fake), p50 | {r['routed_p50_ms']:.3f} ms | | |",
        f"| **added per request** | **{r['added_ms']:.3f} ms** | <= {TARGETS['added_ms']} ms | "
        f"{verdict(r['added_ms'], TARGETS['added_ms'])} |",
        f"| CPU per request, raw / routed | {r['raw_cpu_ms']:.3f} / {r['routed_cpu_ms']:.3f} ms "
        f"({r['routed_cpu_ms'] / r['raw_cpu_ms']:.2f}x) | | |",
        f"| served by fallback after one 500, p50 | {r['fallback_p50_ms']:.3f} ms | | |",
        f"| fallback machinery beyond two vendor calls | {r['fallback_machinery_ms']:.3f} ms | "
        f"<= {TARGETS['fallback_ms']} ms | {verdict(r['fallback_machinery_ms'], TARGETS['fallback_ms'])} |",
        f"| stream time to first chunk, raw / routed | {r['raw_ttfc_ms']:.3f} / {r['routed_ttfc_ms']:.3f} ms | | |",
        f"| streaming: first chunk added | {r['ttfc_added_ms']:.3f} ms | <= {TARGETS['ttfc_ms']} ms | "
        f"{verdict(r['ttfc_added_ms'], TARGETS['ttfc_ms'])} |",
        f"| exact cache hit, p50 / p99 | {r['cache_hit_p50_us']:.1f} / {r['cache_hit_p99_us']:.1f} µs | "
        f"<= {TARGETS['cache_us']:g} µs | {verdict(r['cache_hit_p50_us'], TARGETS['cache_us'])} |",
    ]
    if log:
        lines.append(f"| decision log, sustained | {log['rows_per_s']:,.0f} rows/s | >= 50,000 | "
                     f"{'met' if log['rows_per_s'] >= 50_000 else 'MISSED'} |")
        lines.append(f"| decision log, worst event-loop stall | {log['max_stall_ms']:.2f} ms | <= 1 ms | "
                     f"{'met' if log['max_stall_ms'] <= 1 else 'MISSED'} |")
    lines.append(f"\n{r['n']} sequential requests per variant over one keep-alive connection to the fake "
                 "(`python -m tests.fakes`, 0 ms latency, its own process); raw and routed rounds interleaved. "
                 "The router logs every request to SQLite during the run.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts (smoke test); RESULTS.md untouched")
    args = ap.parse_args()
    n = 200 if args.quick else 2000
    with spawn_fake(latency_ms=0) as fake:
        r = asyncio.run(measure(n, fake))
    log = None
    try:
        from benchmarks.decision_log import run as log_run

        log = log_run(rows=5_000 if args.quick else 50_000)
    except ImportError:
        pass
    out = report(r, log)
    print(out)
    if not args.quick:
        write_section("router", f"## Router overhead (benchmarks/router.py)\n\n{machine()}\n\n{out}\n")


if __name__ == "__main__":
    main()
