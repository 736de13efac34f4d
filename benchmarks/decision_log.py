"""Decision log benchmark: sustained write rate and the event-loop stall it causes.

Run from the repository root:

    python benchmarks/decision_log.py [ROWS]

It prints a table and replaces the `decision_log` section of `benchmarks/RESULTS.md`.

Two measurements, each on a fresh SQLite file in a temporary directory (on the same disk as
`tempfile.gettempdir()`):

1. Throughput: one thread calls `DecisionLog.record()` for `rows` prebuilt records (a realistic
   mix: most served by their first model, some after a fallback, some cache hits or refusals,
   so about one attempt row per request row), then `flush()`. Rate = rows committed / time from
   the first `record()` to the end of `flush()`. Request ids are random (uuid4), the worst case
   for the primary-key B-tree.
2. Event-loop stall: an asyncio loop records the same number of records in chunks
   (`chunk` records, then `await asyncio.sleep(0.001)`), while a ticker coroutine wakes every
   1 ms and keeps the worst lateness of its wake-ups. The same workload against a sink that
   only appends to a list gives the machine's own jitter as a baseline.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python benchmarks/decision_log.py` without installing
    sys.path.insert(0, str(ROOT))

from engine.store.decisions import DecisionLog  # noqa: E402
from engine.store.records import AttemptRecord, RequestRecord  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- decision_log:start -->", "<!-- decision_log:end -->"
TARGET_ROWS_PER_S = 50_000
TARGET_STALL_MS = 1.0

Record = tuple[RequestRecord, tuple[AttemptRecord, ...]]


def make_records(n: int, *, t0: float = 1_700_000_000.0) -> list[Record]:
    """`n` requests shaped like production traffic (deterministic mix, random ids)."""
    out: list[Record] = []
    models = (("gpt-4o-mini", "openai"), ("claude-haiku", "anthropic"), ("gemini-flash", "gemini"))
    for i in range(n):
        rid = uuid.uuid4().hex
        ts = t0 + i * 0.001
        kind = i % 20  # 0: fallback, 1: cache hit, 2: refused, else served first time
        first, second = models[i % 3], models[(i + 1) % 3]
        plan = (first[0], second[0])
        meta = {"tenant": f"tenant-{i % 50}", "tier": "premium" if i % 7 == 0 else "free", "user": f"u{i % 1000}"}
        features = {"signals": {"has_code": i % 5 == 0, "math": False}, "has_tools": False, "has_images": False}
        common: dict[str, Any] = dict(
            id=rid, ts=ts, policy_digest="3f2a9c", tenant=meta["tenant"], api_key_id="key-1", route="default",
            query_type="code" if i % 5 == 0 else "chat", plan=plan, prompt_tokens=350, max_tokens=512,
            temperature=0.0, prompt_hash=f"{i:064x}", meta=meta, features=features,
        )  # fmt: skip
        attempts: tuple[AttemptRecord, ...]
        if kind == 2:
            out.append((RequestRecord(**common, outcome="refused", error_class="RoutingRefused",
                                      error_message="no model fits max_cost_usd"), ()))  # fmt: skip
            continue
        if kind == 1:
            out.append((RequestRecord(**common, outcome="ok", model=first[0], provider=first[1], cache_hit=True,
                                      saved_cost_usd=0.0004, latency_ms=0.02), ()))  # fmt: skip
            continue
        ok_model = second if kind == 0 else first
        attempts = (AttemptRecord(request_id=rid, n=1, model=ok_model[0], provider=ok_model[1], ts=ts,
                                  latency_ms=480.0, outcome="ok", input_tokens=350, output_tokens=200,
                                  cost_usd=0.00017),)  # fmt: skip
        if kind == 0:
            failed = AttemptRecord(request_id=rid, n=1, model=first[0], provider=first[1], ts=ts,
                                   latency_ms=35.0, outcome="error", error_class="RateLimited",
                                   error_message="429", retry_after=2.0)  # fmt: skip
            attempts = (failed, AttemptRecord(**{**attempts[0].as_row(), "n": 2}))
        out.append((RequestRecord(**common, outcome="ok", model=ok_model[0], provider=ok_model[1],
                                  attempts=len(attempts), fallbacks=len(attempts) - 1, input_tokens=350,
                                  output_tokens=200, cost_usd=0.00017, latency_ms=520.0), attempts))  # fmt: skip
    return out


def measure_throughput(records: list[Record], path: Path) -> dict[str, float]:
    """Rows committed per second through `record()` plus the final `flush()`."""
    with DecisionLog(path) as log:
        start = time.perf_counter()
        cpu_start = time.process_time()
        for request, attempts in records:
            log.record(request, attempts)
        queued = time.perf_counter()
        log.flush()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        rows = log.rows_written
    return {
        "records_per_s": len(records) / elapsed,
        "rows_per_s": rows / elapsed,
        "rows_per_record": rows / len(records),
        "record_call_us": (queued - start) / len(records) * 1e6,
        "cpu_us_per_record": cpu / len(records) * 1e6,
    }


async def _stall_run(records: list[Record], record: Callable[[RequestRecord, tuple[AttemptRecord, ...]], None],
                     chunk: int) -> dict[str, float]:  # fmt: skip
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        # Each tick asks for 1 ms from the moment it runs: epoll rounds its timeout up to whole
        # milliseconds, so a fixed grid would report that rounding (up to 1 ms) as lateness.
        while not done.is_set():
            asked = loop.time()
            await asyncio.sleep(0.001)
            lateness.append(loop.time() - asked - 0.001)

    async def workload() -> None:
        for k in range(0, len(records), chunk):
            for request, attempts in records[k : k + chunk]:
                record(request, attempts)
            await asyncio.sleep(0.001)
        done.set()

    start = loop.time()
    tick = asyncio.create_task(ticker())
    await workload()
    duration = loop.time() - start
    await tick
    ordered = sorted(lateness)
    return {
        "max_stall_ms": ordered[-1] * 1e3,
        "p99_stall_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
        "median_stall_ms": statistics.median(ordered) * 1e3,
        "ticks": float(len(ordered)),
        "offered_records_per_s": len(records) / duration,
    }


def measure_stall(records: list[Record], path: Path, *, chunk: int = 40) -> dict[str, float]:
    """Worst 1 ms-ticker lateness while the loop records, against the log and against a list."""
    sink: list[Record] = []

    def null_record(request: RequestRecord, attempts: tuple[AttemptRecord, ...]) -> None:
        sink.append((request, attempts))

    baseline = asyncio.run(_stall_run(records, null_record, chunk))
    log = DecisionLog(path)

    async def with_log() -> dict[str, float]:
        result = await _stall_run(records, log.record, chunk)
        await log.aclose()
        return result

    measured = asyncio.run(with_log())
    measured.update({f"baseline_{k}": v for k, v in baseline.items() if k.endswith("stall_ms")})
    measured["rows_written"] = float(log.rows_written)
    return measured


def run(rows: int = 50_000) -> dict[str, float]:
    """Run both measurements on `rows` records; return the figures (rates per second, times in ms/µs)."""
    records = make_records(rows)
    with tempfile.TemporaryDirectory(prefix="decision-log-bench-") as tmp:
        result = measure_throughput(records, Path(tmp) / "throughput.db")
        result.update(measure_stall(records, Path(tmp) / "stall.db"))
    result["records"] = float(rows)
    return result


def render(result: dict[str, float]) -> str:
    """The Markdown section written to RESULTS.md."""
    ok_rate = "yes" if result["rows_per_s"] >= TARGET_ROWS_PER_S else "NO"
    ok_stall = "yes" if result["max_stall_ms"] <= TARGET_STALL_MS else "NO"
    return "\n".join([
        START,
        "## Decision log (`benchmarks/decision_log.py`)",
        "",
        f"{int(result['records']):,} records, {result['rows_per_record']:.2f} rows each (request + attempts), "
        f"uuid4 ids, WAL, synchronous=NORMAL; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| sustained rows/s (record() + final flush) | {result['rows_per_s']:,.0f} | >= {TARGET_ROWS_PER_S:,} | "
        f"{ok_rate} |",
        f"| sustained request records/s | {result['records_per_s']:,.0f} | | |",
        f"| record() call, mean | {result['record_call_us']:.2f} µs | | |",
        f"| process CPU per record (all threads) | {result['cpu_us_per_record']:.1f} µs | | |",
        f"| worst event-loop stall (1 ms ticker) | {result['max_stall_ms']:.3f} ms | <= {TARGET_STALL_MS} ms | "
        f"{ok_stall} |",
        f"| p99 / median ticker lateness | {result['p99_stall_ms']:.3f} / {result['median_stall_ms']:.3f} ms | | |",
        f"| same workload, list sink instead of the log: worst / p99 | {result['baseline_max_stall_ms']:.3f} / "
        f"{result['baseline_p99_stall_ms']:.3f} ms | | |",
        f"| offered load during the stall run | {result['offered_records_per_s']:,.0f} records/s | | |",
        END,
    ])  # fmt: skip


def write_results(section: str, path: Path = RESULTS) -> None:
    """Replace (or add) the decision_log section of RESULTS.md, creating the file if needed."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    section = render(run(n))
    print(section)
    write_results(section)
