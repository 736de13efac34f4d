"""`engine serve` throughput and added latency over the instant fake upstream, on loopback.

    python -m benchmarks.serve [--seconds 5] [--connections 32] [--workers 2]

These targets answer the same chat completion request:

- the fake OpenAI upstream itself (`python -m tests.fakes`, latency 0): the floor;
- `engine serve`, one worker, routing to that fake through the openai adapter on its SDK transport
  (provider option `transport: sdk`), with the decision log on;
- the same over the adapter's lean transport (`transport: http`, aiohttp: the default);
- the SDK transport with N workers;
- `engine serve` over a `simulated` provider with no latency: the service and router alone, no
  upstream HTTP at all.

The load generator is a lean asyncio HTTP/1.1 client over keep-alive connections (uvloop), in
its own process, so that the generator costs little next to what it measures. Latency at one
connection is sequential requests (p50/p99); throughput is `--connections` concurrent
connections for `--seconds`. Added latency = service p50 - upstream p50 at one connection.
All processes share this machine's cores: the numbers are ratios of one run, not absolutes.
Writes its section of benchmarks/RESULTS.md between `<!-- serve:start -->` and `<!-- serve:end -->`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks._results import machine, write_section
from tests.fakes import spawn_fake

REPO = Path(__file__).resolve().parents[1]
BODY = json.dumps({"model": "auto", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly."}]}).encode()


def _request(host: str, port: int, path: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer sk-bench\r\ncontent-length: {len(BODY)}\r\n\r\n").encode() + BODY


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if m is None:
        raise RuntimeError(f"no content-length in {head!r}")
    await reader.readexactly(int(m.group(1)))
    return status


async def _sequential(host: str, port: int, path: str, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection(host, port)
    req = _request(host, port, path)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status = await _exchange(reader, writer, req)
        out.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise RuntimeError(f"status {status} from {path}")
    writer.close()
    return out


async def _concurrent(host: str, port: int, path: str, connections: int, seconds: float) -> tuple[int, list[float]]:
    req = _request(host, port, path)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, req)
            if status != 200:
                raise RuntimeError(f"status {status} from {path}")
            latencies.append((time.perf_counter() - t0) * 1000)
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return len(latencies), latencies or [0.0]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(url: str, path: str, *, seconds: float, connections: int, warmup: int = 300) -> dict[str, float]:
    """Latency at one connection and throughput at `connections`, in a fresh load-generator process."""
    code = ("import asyncio, json, sys, uvloop; from benchmarks.serve import _child; "
            "print(json.dumps(uvloop.run(_child(*json.loads(sys.argv[1])))))")
    host, port = url.removeprefix("http://").split(":")
    args = json.dumps([host, int(port), path, seconds, connections, warmup])
    out = subprocess.run([sys.executable, "-c", code, args], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    result: dict[str, float] = json.loads(out.stdout)
    return result


async def _child(host: str, port: int, path: str, seconds: float, connections: int,
                 warmup: int) -> dict[str, float]:
    await _sequential(host, port, path, warmup)
    seq = await _sequential(host, port, path, 2000)
    count, lat = await _concurrent(host, port, path, connections, seconds)
    return {"p50_1c": statistics.median(seq), "p99_1c": _pct(seq, 0.99), "rps": count / seconds,
            "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99)}


def _policy(upstream: str | None, log: Path, transport: str = "sdk") -> str:
    if upstream is None:
        provider = "  sim: {adapter: simulated, latency_ms: {p50: 0, p95: 0}, failure_rate: 0}\n"
        model_provider = "sim"
    else:
        provider = (f"  openai: {{adapter: openai, api_key: sk-bench-0123456789abcdef, base_url: '{upstream}/v1', "
                    f"timeout_s: 10, options: {{transport: {transport}}}}}\n")
        model_provider = "openai"
    return f"""version: 1
providers:
{provider}models:
  gpt-mini:
    provider: {model_provider}
    id: gpt-4o-mini
    price: {{input: 0.15, output: 0.60}}
    context_window: 128000
    scores: {{chat: 4}}
routes:
  - name: default
    strategy: cheapest
health: {{min_requests: 1000000}}
log: {{sqlite: '{log}', prompts: hash}}
"""


@contextmanager
def serve(policy: Path, workers: int) -> Iterator[str]:
    """`engine serve` in a subprocess; yields its URL once every worker is up."""
    cmd = [sys.executable, "-c", "from engine.cli import main; main()", "serve", "--policy", str(policy),
           "--port", "0", "--workers", str(workers), "--log-level", "info", "--reload-interval", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    url, ready = "", 0
    try:
        for line in proc.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            url = m.group(1) if m else url
            ready += "Application startup complete" in line
            if url and ready >= workers:
                break
        if not url or ready < workers:
            raise RuntimeError("engine serve did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()


def main(argv: list[str] | None = None) -> None:
    """Run every target and write the results section."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)
    kw = {"seconds": args.seconds, "connections": args.connections}
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp, spawn_fake(latency_ms=0) as fake:
        rows.append(("fake upstream, direct", measure(fake.url, "/v1/chat/completions", **kw)))
        for name, upstream, workers, transport in (
            ("engine serve -> fake (openai adapter, transport sdk), 1 worker", fake.url, 1, "sdk"),
            ("engine serve -> fake (openai adapter, transport http: the default), 1 worker", fake.url, 1, "http"),
            (f"engine serve -> fake (openai adapter, transport sdk), {args.workers} workers", fake.url,
             args.workers, "sdk"),
            ("engine serve -> simulated provider (no upstream), 1 worker", None, 1, "sdk"),
        ):
            policy = Path(tmp) / f"p{len(rows)}.yaml"
            policy.write_text(_policy(upstream, Path(tmp) / f"d{len(rows)}.db", transport))
            with serve(policy, workers) as url:
                rows.append((name, measure(url, "/v1/chat/completions", **kw)))
            print(f"{name}: {rows[-1][1]}", file=sys.stderr)
    base = rows[0][1]
    lines = ["## engine serve (`python -m benchmarks.serve`)\n",
             f"{machine()}; {os.cpu_count()} cores shared by the upstream, the service and the load generator; "
             f"{args.connections} keep-alive connections for {args.seconds:g} s; latency at 1 connection is "
             "2000 sequential requests after a warm-up.\n",
             "| target | req/s | p50 ms | p99 ms | p50 ms @1 conn | p99 ms @1 conn | added p50 @1 conn |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        added = "-" if r is base else f"{r['p50_1c'] - base['p50_1c']:+.3f} ms"
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p50_1c']:.3f} | "
                     f"{r['p99_1c']:.3f} | {added} |")
    lines.append("\nTargets (DESIGN.md): one worker >= Portkey's ~780 req/s on one core; p50 added at one connection "
                 "<= 1 ms.")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("serve", text)


if __name__ == "__main__":
    main()
