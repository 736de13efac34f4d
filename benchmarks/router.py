"""What the router adds on top of the raw vendor SDK, measured in one run against the same
loopback fake (DESIGN.md targets), plus cache hits, tool-call requests and the decision log.

    python benchmarks/router.py [--quick] [--baseline REV]

Rows: added latency per request (routed minus raw `openai` SDK call), CPU per request,
fallback machinery beyond the two vendor calls, streaming time to first chunk, exact-cache
hit latency, what a tool-call request adds over plain text, and the decision log's sustained
rows/s with the event loop's worst stall.

`--baseline REV` also measures a git revision of this repository in the same run (exported to
a temporary directory, run in subprocesses against the same fake, rounds interleaved with the
working tree's): exact cache hit and a plain routed call, before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if "--probe" in sys.argv:
    # a probe measures the tree its PYTHONPATH names; this directory (first on sys.path) holds
    # benchmarks/adapters.py, which would shadow the `adapters` package
    sys.path.remove(str(Path(__file__).resolve().parent))
else:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import machine, write_section
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
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time in a time zone", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]
TOOL_MESSAGES = [{"role": "user", "content": "What is the weather in Paris, please?"}]


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

    from engine.policy.api import load_policy_text
    from engine.runtime.router import Router

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
        tool_fake = await _tool_call_on_fake(router, n)
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
            "n": n, "tool_fake": tool_fake,
        }
    await raw.close()
    res["tool_router"] = await _tool_call_router_only(n, tmp)
    return res


async def _tool_call_on_fake(router: Any, n: int) -> dict[str, float] | None:
    """Tool-call vs plain request over the OpenAI fake, when this tree's adapter maps tools."""
    adapter = router.adapters.get(router.policy.models["m-main"])
    if "tools" not in adapter.supported_options:
        return None
    return await _plain_vs_tool(router, n)


async def _plain_vs_tool(router: Any, n: int) -> dict[str, float]:
    """The same conversation through `router` without and with tools, paired."""

    async def plain() -> None:
        await router.generate(messages=TOOL_MESSAGES, max_tokens=50)

    async def tool() -> None:
        r = await router.generate(messages=TOOL_MESSAGES, max_tokens=50, tools=TOOLS)
        assert r.tool_calls

    return await _paired(plain, tool, n)


async def _tool_call_router_only(n: int, tmp: Path) -> dict[str, float]:
    """Tool-call vs plain request over instant in-process models: what the router itself adds
    for the tools (coercion, token estimate, cache key fields, log columns), no HTTP or SDK."""
    from engine.policy.api import load_policy_text
    from engine.runtime.router import Router
    from tests.runtime.toolsim import tool_sims

    text = POLICY.replace("adapter: openai, api_key: sk-bench, base_url: \"{main}\"", "adapter: simulated").replace(
        "adapter: openai, api_key: sk-bench, base_url: \"{backup}\"", "adapter: simulated").format(
        log=tmp / "tools.db")
    policy = load_policy_text(text, "bench.yaml", env={})
    async with Router(policy, adapters=tool_sims(policy)) as router:
        return await _plain_vs_tool(router, n)


async def _paired(plain: Any, tool: Any, n: int) -> dict[str, float]:
    """Interleaved rounds of two variants: p50 ms of each and the difference."""
    a_ms: list[float] = []
    b_ms: list[float] = []
    for _ in range(4):
        a, _ = await timed(plain, n // 4)
        b, _ = await timed(tool, n // 4)
        a_ms += a
        b_ms += b
    pa, pb = statistics.median(a_ms), statistics.median(b_ms)
    return {"plain_ms": pa, "tool_ms": pb, "added_ms": pb - pa}


# -- before/after: the same measurement of another revision, in the same run -------------------------

PROBE_ROUNDS = 3


async def probe(n: int, fake_url: str) -> dict[str, float]:
    """Exact cache hit and a plain routed call with whatever `engine` is first on sys.path (the
    working tree, or an exported baseline revision). Only the public API every revision has."""
    from engine.policy.api import load_policy_text
    from engine.runtime.router import Router

    tmp = Path(tempfile.mkdtemp())
    url = fake_url.rstrip("/")
    text = POLICY.format(main=url + "/v1", backup=url + "/backup/v1", log=tmp / "probe.db")
    async with Router(load_policy_text(text, "bench.yaml", env={})) as router:
        async def routed() -> None:
            await router.generate(messages=MESSAGES, max_tokens=50)

        async def cache_hit() -> None:
            r = await router.generate(messages=MESSAGES, max_tokens=50, temperature=0)
            assert r.cached

        await router.generate(messages=MESSAGES, max_tokens=50, temperature=0)
        routed_ms, routed_cpu = await timed(routed, max(50, n // 4))
        hits_ms, _ = await timed(cache_hit, n)
    # the same over instant in-process models: the router alone, without HTTP and SDK noise
    from adapters.base import Price
    from adapters.simulated import SimulatedAdapter

    sim_text = POLICY.replace('adapter: openai, api_key: sk-bench, base_url: "{main}"', "adapter: simulated").replace(
        'adapter: openai, api_key: sk-bench, base_url: "{backup}"', "adapter: simulated").format(log=tmp / "sim.db")
    sim_policy = load_policy_text(sim_text, "bench.yaml", env={})
    sims = {name: SimulatedAdapter(m.provider, m.id, price=Price(m.price.input, m.price.output), time_scale=0)
            for name, m in sim_policy.models.items()}
    async with Router(sim_policy, adapters=sims) as sim:
        async def sim_routed() -> None:
            await sim.generate(messages=MESSAGES, max_tokens=50)

        async def sim_hit() -> None:
            await sim.generate(messages=MESSAGES, max_tokens=50, temperature=0)

        await sim_hit()
        sim_ms, sim_cpu = await timed(sim_routed, n)
        sim_hits, _ = await timed(sim_hit, n)
    return {"cache_hit_p50_us": statistics.median(hits_ms) * 1000, "routed_p50_ms": statistics.median(routed_ms),
            "routed_cpu_ms": routed_cpu, "sim_routed_p50_us": statistics.median(sim_ms) * 1000,
            "sim_routed_cpu_us": sim_cpu * 1000, "sim_hit_p50_us": statistics.median(sim_hits) * 1000}


def _export(rev: str) -> Path:
    root = Path(__file__).resolve().parent.parent
    out = Path(tempfile.mkdtemp(prefix="router-baseline-"))
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=root, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def _probe_in(tree: Path, n: int, fake_url: str) -> dict[str, float]:
    """Run `probe` in a fresh interpreter whose `engine` and `adapters` come from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = Path(__file__).resolve()
    out = subprocess.run([sys.executable, str(script), "--probe", fake_url, "--n", str(n)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def before_after(rev: str, n: int, fake_url: str) -> dict[str, Any]:
    """Interleaved probe rounds of `rev` and of the working tree; medians of the rounds."""
    base = _export(rev)
    here = Path(__file__).resolve().parent.parent
    rounds: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(PROBE_ROUNDS):
        rounds["before"].append(_probe_in(base, n, fake_url))
        rounds["after"].append(_probe_in(here, n, fake_url))
    out: dict[str, Any] = {"rev": rev}
    for side, rs in rounds.items():
        out[side] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    return out


def verdict(value: float, target: float) -> str:
    if value < 0:
        return "not judged: negative, noise larger than the effect"
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
    for label, t in (("over the OpenAI fake", r.get("tool_fake")), ("router only, instant in-process models",
                                                                    r.get("tool_router"))):
        if t is None:
            lines.append(f"| tool-call request vs plain text, {label} | not measured: this tree's openai adapter "
                         "does not map tools | | |")
        else:
            lines.append(f"| tool-call request vs plain text, {label}, p50 | {t['plain_ms']:.3f} -> "
                         f"{t['tool_ms']:.3f} ms (**+{t['added_ms']:.3f} ms**) | | |")
    if log:
        lines.append(f"| decision log, sustained | {log['rows_per_s']:,.0f} rows/s | >= 50,000 | "
                     f"{'met' if log['rows_per_s'] >= 50_000 else 'MISSED'} |")
        lines.append(f"| decision log, worst event-loop stall | {log['max_stall_ms']:.2f} ms | <= 1 ms | "
                     f"{'met' if log['max_stall_ms'] <= 1 else 'MISSED'} |")
    ba = r.get("before_after")
    if ba:
        b, a = ba["before"], ba["after"]
        lines += [
            "", f"Before/after in the same run: revision `{ba['rev']}` (before) and this tree (after), "
            f"{PROBE_ROUNDS} interleaved rounds each in its own process against the same fake; medians of the rounds.",
            "", "| measure | before | after | after / before |", "|---|---:|---:|---:|",
            f"| exact cache hit, p50 | {b['cache_hit_p50_us']:.1f} µs | {a['cache_hit_p50_us']:.1f} µs | "
            f"{a['cache_hit_p50_us'] / b['cache_hit_p50_us']:.2f} |",
            f"| plain routed call, p50 | {b['routed_p50_ms']:.3f} ms | {a['routed_p50_ms']:.3f} ms | "
            f"{a['routed_p50_ms'] / b['routed_p50_ms']:.2f} |",
            f"| plain routed call, CPU | {b['routed_cpu_ms']:.3f} ms | {a['routed_cpu_ms']:.3f} ms | "
            f"{a['routed_cpu_ms'] / b['routed_cpu_ms']:.2f} |",
            f"| router alone (instant in-process models): exact cache hit, p50 | {b['sim_hit_p50_us']:.1f} µs | "
            f"{a['sim_hit_p50_us']:.1f} µs | {a['sim_hit_p50_us'] / b['sim_hit_p50_us']:.2f} |",
            f"| router alone: plain request, p50 | {b['sim_routed_p50_us']:.1f} µs | {a['sim_routed_p50_us']:.1f} µs | "
            f"{a['sim_routed_p50_us'] / b['sim_routed_p50_us']:.2f} |",
            f"| router alone: plain request, CPU | {b['sim_routed_cpu_us']:.1f} µs | {a['sim_routed_cpu_us']:.1f} µs | "
            f"{a['sim_routed_cpu_us'] / b['sim_routed_cpu_us']:.2f} |",
        ]
    lines.append(f"\n{r['n']} sequential requests per variant over one keep-alive connection to the fake "
                 "(`python -m tests.fakes`, 0 ms latency, its own process); raw and routed rounds interleaved. "
                 "The router logs every request to SQLite during the run.")
    if r.get("load") is not None:
        lines.append(f"Load average (1 min) at the end of the run: {r['load']:.1f} on {os.cpu_count()} CPUs; on a "
                     "loaded machine absolute figures inflate, the same-run ratios much less.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts (smoke test); RESULTS.md untouched")
    ap.add_argument("--baseline", metavar="REV", help="also measure this git revision (before/after, same run)")
    ap.add_argument("--probe", metavar="FAKE_URL", help=argparse.SUPPRESS)  # internal: one probe round
    ap.add_argument("--n", type=int, default=2000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(asyncio.run(probe(args.n, args.probe))))
        return
    n = 200 if args.quick else 2000
    with spawn_fake(latency_ms=0) as fake:
        r = asyncio.run(measure(n, fake))
        if args.baseline:
            r["before_after"] = before_after(args.baseline, n, fake.url)
    r["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
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
