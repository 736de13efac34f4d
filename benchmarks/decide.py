"""decide() latency on generated policies of 10, 100 and 1000 routes, against naive
first-match evaluation in the same run, plus compile time (DESIGN.md targets).

    python benchmarks/decide.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import machine, write_section
from engine.policy.build import build_policy
from engine.policy.compile import compile_policy
from engine.routing.decide import decide_features
from engine.routing.features import Features

QTS = ["chat", "code", "math", "reasoning", "creative", "summarize", "extract", "translate"]
TIERS = [f"tier{i}" for i in range(12)]
REGIONS = ["eu", "us", "apac", "latam"]
TARGETS = {100: 20.0, 1000: 50.0}  # p50 µs
COMPILE_TARGET_MS = 200.0


def policy_data(n_routes: int, seed: int = 1) -> dict[str, Any]:
    """A policy whose routes test query type, tier, region, signals and token counts."""
    rng = random.Random(seed)
    models = {f"m{i}": {"provider": "sim", "price": {"input": rng.uniform(0.1, 5), "output": rng.uniform(0.2, 15)},
                        "context_window": rng.choice([32000, 128000, 200000]),
                        "scores": {q: rng.randint(2, 5) for q in QTS}} for i in range(12)}
    routes = []
    for i in range(n_routes - 1):
        parts = [f"query_type == '{rng.choice(QTS)}'", f"meta.tier == '{rng.choice(TIERS)}'"]
        if rng.random() < 0.5:
            parts.append(f"meta.region in {rng.sample(REGIONS, 2)!r}")
        if rng.random() < 0.3:
            parts.append("signals.long" if rng.random() < 0.5 else "not signals.long")
        if rng.random() < 0.3:
            parts.append(f"prompt_tokens > {rng.randrange(100, 5000)}")
        routes.append({"name": f"r{i}", "when": " and ".join(parts), "strategy": rng.choice(["best", "cheapest"]),
                       "candidates": rng.sample(sorted(models), 4), "require": {"score": 3}})
    routes.append({"name": "default", "strategy": "cheapest"})
    return {"version": 1, "providers": {"sim": {"adapter": "simulated"}}, "models": models,
            "signals": {"long": {"when": "prompt_tokens > 2000"}},
            "query_types": [{"type": q, "when": f"meta.qt == '{q}'"} for q in QTS[:-1]] + [{"type": QTS[-1]}],
            "routes": routes}


def requests(n: int, seed: int = 2) -> list[Features]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens = rng.randrange(10, 6000)
        out.append(Features(prompt_tokens=tokens, max_tokens=rng.choice([256, 1000]), temperature=0.7, stream=False,
                            has_tools=False, has_images=False, has_system=False, query_type=rng.choice(QTS),
                            signals={"long": tokens > 2000},
                            meta={"tier": rng.choice(TIERS), "region": rng.choice(REGIONS)}))
    return out


def time_each(fn: Any, items: list[Features]) -> list[float]:
    """Per-call latency in µs."""
    out = []
    clock = time.perf_counter_ns
    for f in items:
        t = clock()
        fn(f)
        out.append((clock() - t) / 1000)
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def run(sizes: list[int], n_requests: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        data = policy_data(n)
        policy = build_policy(data)
        t = time.perf_counter()
        compiled = compile_policy(policy)
        compile_ms = (time.perf_counter() - t) * 1000
        reqs = requests(n_requests)
        for f in reqs[:200]:  # warm up, and check both paths agree
            a, b = decide_features(compiled, f), decide_features(compiled, f, naive=True)
            assert (a.route, a.plan) == (b.route, b.plan)
        gc.disable()
        try:
            tree = time_each(lambda f, c=compiled: decide_features(c, f), reqs)
            naive = time_each(lambda f, c=compiled: decide_features(c, f, naive=True), reqs)
        finally:
            gc.enable()
        rows.append({"routes": n, "nodes": compiled.node_count, "compile_ms": compile_ms,
                     "p50": statistics.median(tree), "p99": pct(tree, 99),
                     "naive_p50": statistics.median(naive), "naive_p99": pct(naive, 99)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| routes | tree nodes | compile ms | decide p50 µs | p99 µs | naive p50 µs | naive p99 µs | "
             "speed-up (p50) | target p50 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        target = TARGETS.get(r["routes"])
        verdict = "" if target is None else f"<= {target:g} µs: {'met' if r['p50'] <= target else 'MISSED'}"
        lines.append(f"| {r['routes']} | {r['nodes']} | {r['compile_ms']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                     f"{r['naive_p50']:.1f} | {r['naive_p99']:.1f} | {r['naive_p50'] / r['p50']:.1f}x | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    args = ap.parse_args()
    n = 300 if args.quick else 5000
    rows = run([10, 100, 1000], n)
    out = table(rows)
    c1000 = next(r["compile_ms"] for r in rows if r["routes"] == 1000)
    out += (f"\n\nCompile of 1000 routes: {c1000:.0f} ms (target <= {COMPILE_TARGET_MS:g} ms: "
            f"{'met' if c1000 <= COMPILE_TARGET_MS else 'MISSED'}). `decide` here starts from computed features "
            f"(route match, eligibility, ranking, plan); {n} requests per size, GC off while timing.")
    print(out)
    if not args.quick:
        write_section("decide", f"## decide (benchmarks/decide.py)\n\n{machine()}\n\n{out}\n")


if __name__ == "__main__":
    main()
