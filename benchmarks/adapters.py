"""Adapter overhead over the raw vendor SDK, per adapter, against the fakes in a separate process.

    PYTHONPATH=. python benchmarks/adapters.py [--n 400] [--no-write]

For each vendor, the same run alternates a raw SDK call (client built the same way: retries
off, same timeout) and a call through our adapter, on the same loopback fake (latency 0).
Reported: p50 wall time of each, the added p50 (adapter - raw), the ratio, and the client-side
CPU per call (process time over the batch, which excludes the fake's own work). Streaming adds
the time to the first text chunk. The simulated adapter (time_scale 0) shows the base flow's
own cost. Results go to stdout and to the adapters section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters import LLMAdapter, Price, SimulatedAdapter, TextDelta  # noqa: E402
from benchmarks._results import machine, write_section  # noqa: E402
from tests.fakes import RemoteFake, spawn_fake  # noqa: E402
from tests.fakes.clients import TEST_KEYS, TEST_MODELS, adapter_for  # noqa: E402

PROMPT = "Summarise the benefits of policy-driven routing in one line."
Call = Callable[[], Awaitable[Any]]


def raw_calls(kind: str, fake: RemoteFake) -> tuple[Call, Call, Callable[[], Awaitable[None]]]:
    """(non-streaming call, call returning time to first chunk, close) on the bare SDK."""
    model, key = TEST_MODELS[kind], TEST_KEYS[kind]
    if kind in ("openai", "openai_compatible"):
        import openai

        base = fake.openai_url if kind == "openai" else fake.channel_url("compat")
        oc = openai.AsyncOpenAI(api_key=key, base_url=base, max_retries=0, timeout=10.0)
        field = "max_completion_tokens" if kind == "openai" else "max_tokens"
        params: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}], field: 64,
                                  "temperature": 0.2, "timeout": 10.0}

        async def call() -> Any:
            r = await oc.chat.completions.create(**params)
            return r.choices[0].message.content, r.usage

        async def first() -> float:
            t0 = time.perf_counter()
            s = await oc.chat.completions.create(**params, stream=True, stream_options={"include_usage": True})
            ttft = None
            async for chunk in s:
                if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                    ttft = time.perf_counter() - t0
            return ttft or 0.0

        return call, first, oc.close
    if kind == "anthropic":
        import anthropic

        ac = anthropic.AsyncAnthropic(api_key=key, base_url=fake.anthropic_url, max_retries=0, timeout=10.0)
        aparams: dict[str, Any] = {"model": model, "max_tokens": 64,
                                   "messages": [{"role": "user", "content": PROMPT}], "timeout": 10.0}

        async def acall() -> Any:
            r = await ac.messages.create(**aparams)
            return r.content[0].text, r.usage

        async def afirst() -> float:
            t0 = time.perf_counter()
            s = await ac.messages.create(**aparams, stream=True)
            ttft = None
            async for ev in s:
                if ttft is None and ev.type == "content_block_delta":
                    ttft = time.perf_counter() - t0
            return ttft or 0.0

        return acall, afirst, ac.close
    from google import genai
    from google.genai import types

    gc_ = genai.Client(vertexai=False, api_key=key, http_options=types.HttpOptions(
        base_url=fake.gemini_url, timeout=10_000, retry_options=types.HttpRetryOptions(attempts=1)))
    gargs: dict[str, Any] = {"model": model, "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
                             "config": {"temperature": 0.2, "max_output_tokens": 64}}

    async def gcall() -> Any:
        r = await gc_.aio.models.generate_content(**gargs)
        return r.text, r.usage_metadata

    async def gfirst() -> float:
        t0 = time.perf_counter()
        ttft = None
        async for chunk in await gc_.aio.models.generate_content_stream(**gargs):
            if ttft is None and chunk.text:
                ttft = time.perf_counter() - t0
        return ttft or 0.0

    return gcall, gfirst, gc_.aio.aclose


def ours(adapter: LLMAdapter) -> tuple[Call, Call]:
    async def call() -> Any:
        return await adapter.generate(PROMPT, 64, 0.2)

    async def first() -> float:
        t0 = time.perf_counter()
        ttft = None
        async for ev in adapter.stream(PROMPT, 64, 0.2):
            if ttft is None and isinstance(ev, TextDelta):
                ttft = time.perf_counter() - t0
        return ttft or 0.0

    return call, first


async def timed(call: Call) -> float:
    t0 = time.perf_counter()
    await call()
    return time.perf_counter() - t0


async def paired(a: Call, b: Call, n: int, measure: Callable[[Call], Awaitable[float]]) -> tuple[list[float], ...]:
    """Alternate a and b n times (order flipped every round); per-call seconds and CPU seconds per call."""
    ta: list[float] = []
    tb: list[float] = []
    cpu_a = cpu_b = 0.0
    for i in range(n):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            c0 = time.process_time()
            if which == 0:
                ta.append(await measure(a))
                cpu_a += time.process_time() - c0
            else:
                tb.append(await measure(b))
                cpu_b += time.process_time() - c0
    return ta, tb, [cpu_a / n], [cpu_b / n]


async def first_chunk(call: Call) -> float:
    result: float = await call()
    return result


async def bench_vendor(kind: str, fake: RemoteFake, n: int) -> dict[str, float]:
    raw_call, raw_first, raw_close = raw_calls(kind, fake)
    adapter = adapter_for(kind, fake, price=Price(1.0, 2.0))
    our_call, our_first = ours(adapter)
    try:
        for _ in range(30):  # warm up: imports, pools, pydantic caches
            await raw_call()
            await our_call()
            await raw_first()
            await our_first()
        gc.collect()
        raw, our, raw_cpu, our_cpu = await paired(raw_call, our_call, n, timed)
        raw_ttft, our_ttft, _, _ = await paired(raw_first, our_first, max(50, n // 4), first_chunk)
    finally:
        await adapter.aclose()
        await raw_close()
    p50 = statistics.median
    return {
        "raw_ms": p50(raw) * 1e3, "ours_ms": p50(our) * 1e3, "added_us": (p50(our) - p50(raw)) * 1e6,
        "ratio": p50(our) / p50(raw), "raw_cpu_us": raw_cpu[0] * 1e6, "ours_cpu_us": our_cpu[0] * 1e6,
        "ttft_added_us": (p50(our_ttft) - p50(raw_ttft)) * 1e6,
    }


async def bench_simulated(n: int) -> float:
    sim = SimulatedAdapter("sim", "sim-model", time_scale=0.0)
    for _ in range(200):
        await sim.generate(PROMPT, 64, 0.2)
    t0 = time.perf_counter()
    for _ in range(n * 10):
        await sim.generate(PROMPT, 64, 0.2)
    return (time.perf_counter() - t0) / (n * 10) * 1e6


def render(rows: dict[str, dict[str, float]], sim_us: float, n: int) -> str:
    lines = [
        f"Loopback fake in a separate process, latency 0; {n} alternating pairs per adapter; p50 wall times; "
        "CPU = client process time per call.",
        "",
        "| adapter | raw SDK p50 | ours p50 | added p50 | ratio | raw CPU/call | ours CPU/call | stream TTFT added |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in rows.items():
        lines.append(
            f"| {kind} | {r['raw_ms']:.2f} ms | {r['ours_ms']:.2f} ms | {r['added_us']:+.0f} µs | {r['ratio']:.3f} "
            f"| {r['raw_cpu_us']:.0f} µs | {r['ours_cpu_us']:.0f} µs | {r['ttft_added_us']:+.0f} µs |"
        )
    lines += ["", f"simulated adapter (time_scale 0, no I/O): {sim_us:.1f} µs per generate (the base flow's cost)."]
    return "\n".join(lines)


def write_results(table: str) -> None:
    """Replace the adapters section of RESULTS.md (between its markers), leaving the others alone."""
    run = "Run: `PYTHONPATH=. python benchmarks/adapters.py`"
    body = f"## Adapters (benchmarks/adapters.py)\n\n{machine()}\n\n{table}\n\n{run}"
    write_section("adapters", body)


async def amain(n: int) -> str:
    rows: dict[str, dict[str, float]] = {}
    with spawn_fake(latency_ms=0) as fake:
        for kind in ("openai", "anthropic", "gemini", "openai_compatible"):
            rows[kind] = await bench_vendor(kind, fake, n)
            print(f"{kind}: done", file=sys.stderr)
    sim_us = await bench_simulated(n)
    return render(rows, sim_us, n)


def main() -> None:
    """Run the benchmark, print the table, update RESULTS.md unless --no-write."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="alternating pairs per adapter")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args()
    try:
        import uvloop

        table = uvloop.run(amain(args.n))
    except ImportError:
        table = asyncio.run(amain(args.n))
    print(table)
    if not args.no_write:
        write_results(table)


if __name__ == "__main__":
    main()
