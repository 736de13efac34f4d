"""Decision log benchmark: sustained write rate and the event-loop stall it causes.

Run from the repository root:

    python benchmarks/decision_log.py [ROWS]

It prints a table and replaces the `decision_log` section of `benchmarks/RESULTS.md`
(`python -m benchmarks.decision_log` works too).

Two measurements, each on fresh SQLite files in a temporary directory (on the disk of
`tempfile.gettempdir()`):

1. Throughput: one thread calls `DecisionLog.record()` for `rows` prebuilt records (a realistic
   mix: most served by their first model, some after a fallback, some cache hits or refusals,
   so about one attempt row per request row), then `flush()`. Rate = rows committed / time from
   the first `record()` to the end of `flush()`. Request ids are shaped like the router's own;
   a second run with random uuid4 ids shows the cost of random primary keys.
2. Event-loop stall: an asyncio loop records the same records, 40 per millisecond (faster
   than the writer drains them, so the writer thread is busy throughout), then half of them at
   10 per millisecond (a heavy but sustainable load); meanwhile a
   ticker coroutine sleeps 1 ms at a time and keeps the lateness of each wake-up. The same
   workload against a sink that only appends to a list gives the machine's own jitter. On Linux
   each tick's lateness is also reported without the time the OS left the loop thread waiting
   for a CPU (/proc schedstat), which separates what the log does (GIL hand-offs) from what a
   busy machine does.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python benchmarks/decision_log.py` without installing
    sys.path.insert(0, str(ROOT))

from benchmarks._results import machine, write_section  # noqa: E402
from engine.store.decisions import DecisionLog  # noqa: E402
from engine.store.records import AttemptRecord, RequestRecord  # noqa: E402

TARGET_ROWS_PER_S = 50_000
TARGET_STALL_MS = 1.0

Record = tuple[RequestRecord, tuple[AttemptRecord, ...]]


def make_records(n: int, *, t0: float = 1_700_000_000.0, random_ids: bool = False) -> list[Record]:
    """`n` requests shaped like production traffic (a deterministic mix).

    Ids are shaped like the router's own (`engine.runtime.router`: a random per-process prefix and
    a counter), or random uuid4s with `random_ids` (an application supplying its own ids; the worst
    case for the primary-key B-tree, whose inserts then land on random pages).
    """
    out: list[Record] = []
    models = (("gpt-4o-mini", "openai"), ("claude-haiku", "anthropic"), ("gemini-flash", "gemini"))
    prefix = os.urandom(8).hex()
    for i in range(n):
        rid = uuid.uuid4().hex if random_ids else f"{prefix}{i + 1:012x}"
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
            out.append((RequestRecord(**common, outcome="refused_policy", error_class="RoutingRefused",
                                      error_message="no model fits max_cost_usd"), ()))  # fmt: skip
            continue
        if kind == 1:
            out.append((RequestRecord(**common, outcome="cached", model=first[0], provider=first[1], cache_hit=True,
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
        out.append((RequestRecord(**common, outcome="served", model=ok_model[0], provider=ok_model[1],
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


def _runqueue_wait_s(tid: int | None = None) -> float | None:
    """Time a thread (this one by default) has spent runnable but waiting for a CPU (Linux), else None."""
    path = "/proc/thread-self/schedstat" if tid is None else f"/proc/self/task/{tid}/schedstat"
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


async def _stall_run(records: list[Record], record: Callable[[RequestRecord, tuple[AttemptRecord, ...]], None],
                     chunk: int, writer_tid: int | None = None) -> dict[str, float]:  # fmt: skip
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    own: list[float] = []  # lateness minus the time the OS kept this thread off every CPU
    # ...and only ticks during which the writer thread did not wait for a CPU either: a writer
    # preempted while it holds the GIL stalls the loop too, but that is the machine being busy.
    quiet: list[float] = []
    done = asyncio.Event()

    def writer_waited() -> float:
        return (_runqueue_wait_s(writer_tid) or 0.0) if writer_tid is not None else 0.0

    async def ticker() -> None:
        # Each tick asks for 1 ms from the moment it runs: epoll rounds its timeout up to whole
        # milliseconds, so a fixed grid would report that rounding (up to 1 ms) as lateness.
        while not done.is_set():
            waited, writer_before = _runqueue_wait_s(), writer_waited()
            asked = loop.time()
            await asyncio.sleep(0.001)
            late = loop.time() - asked - 0.001
            lateness.append(late)
            now_waited = _runqueue_wait_s()
            if waited is not None and now_waited is not None:
                own.append(late - (now_waited - waited))
                if writer_waited() - writer_before < 0.0001:
                    quiet.append(own[-1])

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
    result = {
        "max_stall_ms": ordered[-1] * 1e3,
        "p99_stall_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
        "median_stall_ms": statistics.median(ordered) * 1e3,
        "ticks": float(len(ordered)),
        "offered_records_per_s": len(records) / duration,
    }
    if own:
        own.sort()
        result["max_stall_on_cpu_ms"] = own[-1] * 1e3
        result["p99_stall_on_cpu_ms"] = own[int(0.99 * (len(own) - 1))] * 1e3
    if quiet:
        result["max_stall_no_os_wait_ms"] = max(quiet) * 1e3
        result["quiet_tick_share"] = len(quiet) / len(lateness)
    return result


def _median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in runs for k in r}
    return {k: statistics.median(r[k] for r in runs if k in r) for k in sorted(keys)}


def measure_stall(records: list[Record], tmp: Path, *, chunk: int = 40, repeats: int = 3) -> dict[str, float]:
    """1 ms-ticker lateness while the loop records `chunk` records a tick, against the log and a list.

    Each figure is the median over `repeats` runs (the machines these run on are shared), except
    `worst_stall_ms`, the worst lateness of any run.
    """
    sink: list[Record] = []

    def null_record(request: RequestRecord, attempts: tuple[AttemptRecord, ...]) -> None:
        sink.append((request, attempts))

    async def with_log(path: Path) -> dict[str, float]:
        log = DecisionLog(path)
        writer = next(t for t in threading.enumerate() if t.name == f"decision-log:{path.name}")
        result = await _stall_run(records, log.record, chunk, writer.native_id)
        await log.aclose()
        result["rows_written"] = float(log.rows_written)
        return result

    baselines, measured = [], []
    for i in range(repeats):
        sink.clear()
        baselines.append(asyncio.run(_stall_run(records, null_record, chunk)))
        measured.append(asyncio.run(with_log(tmp / f"stall-{chunk}-{i}.db")))
    result = _median_of(measured)
    result["worst_stall_ms"] = max(r["max_stall_ms"] for r in measured)
    result.update({f"baseline_{k}": v for k, v in _median_of(baselines).items() if "stall" in k})
    result["baseline_worst_stall_ms"] = max(r["max_stall_ms"] for r in baselines)
    return result


def run(rows: int = 50_000) -> dict[str, float]:
    """Run the measurements on `rows` records; return the figures (rates per second, times in ms or µs).

    Keys: `rows_per_s`, `records_per_s`, `rows_per_record`, `record_call_us`, `cpu_us_per_record`
    (router-style ids); `uuid4_rows_per_s`, `uuid4_records_per_s` (random ids); for the stall,
    with the loop offering 40 records/ms (more than the writer drains: it is busy throughout):
    `max_stall_ms`, `p99_stall_ms`, `median_stall_ms`, `worst_stall_ms`, `max_stall_on_cpu_ms` and
    `p99_stall_on_cpu_ms` (Linux: lateness minus the time the OS kept the loop thread waiting for a
    CPU), `offered_records_per_s`, the same with a `baseline_` prefix for a list sink, and with a
    `moderate_` prefix for 10 records/ms.
    """
    load_before = os.getloadavg()[0]
    records = make_records(rows)
    with tempfile.TemporaryDirectory(prefix="decision-log-bench-") as tmp:
        result = measure_throughput(records, Path(tmp) / "throughput.db")
        random_ids = measure_throughput(make_records(rows, random_ids=True), Path(tmp) / "uuid4.db")
        result.update({f"uuid4_{k}": v for k, v in random_ids.items() if k.endswith("_per_s")})
        result.update(measure_stall(records, Path(tmp), chunk=40))
        moderate = measure_stall(records[: rows // 2], Path(tmp), chunk=10)
        result.update({f"moderate_{k}": v for k, v in moderate.items()})
    result["records"] = float(rows)
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    return result


def _ms(result: dict[str, float], key: str) -> str:
    return f"{result[key]:.2f} ms" if key in result else "n/a"


def _met(result: dict[str, float], key: str, target: float) -> str:
    return "n/a" if key not in result else "yes" if result[key] <= target else "NO"


def render(result: dict[str, float]) -> str:
    """The Markdown section written to RESULTS.md."""
    ok_rate = "yes" if result["rows_per_s"] >= TARGET_ROWS_PER_S else "NO"
    lines = [
        "## Decision log (benchmarks/decision_log.py)",
        "",
        f"{machine()}; SQLite {sqlite3.sqlite_version}; {os.cpu_count()} CPUs; 1-minute load average "
        f"{result['load_before']:.2f} before the run, {result['load_after']:.2f} after (other work on the machine "
        "shows in every figure, most in the worst-case stalls)",
        "",
        f"{int(result['records']):,} records, {result['rows_per_record']:.2f} rows each (a request row and its "
        "attempt rows); WAL, synchronous=NORMAL. Stall figures: median of 3 runs. \"On CPU\" subtracts from "
        "each tick the time the OS kept the loop thread waiting for a processor; the next line keeps only "
        "the ticks in which the writer thread did not wait for one either (a writer preempted while it "
        "holds the GIL stalls the loop, but that is the machine being busy, not the log).",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| sustained rows/s, record() + final flush (router-style ids) | {result['rows_per_s']:,.0f} | "
        f">= {TARGET_ROWS_PER_S:,} | {ok_rate} |",
        f"| sustained request records/s (router-style ids) | {result['records_per_s']:,.0f} | | |",
        f"| same with random uuid4 ids: rows/s, records/s | {result['uuid4_rows_per_s']:,.0f}, "
        f"{result['uuid4_records_per_s']:,.0f} | | |",
        f"| record() call, mean (caller's thread) | {result['record_call_us']:.2f} µs | | |",
        f"| process CPU per record (all threads) | {result['cpu_us_per_record']:.1f} µs | | |",
    ]
    for prefix, label in (("", "writer saturated"), ("moderate_", "moderate load")):
        offered = result[f"{prefix}offered_records_per_s"]
        lines += [
            f"| loop stall, {label} ({offered:,.0f} records/s offered): worst 1 ms-ticker lateness | "
            f"{_ms(result, prefix + 'max_stall_ms')} | <= {TARGET_STALL_MS} ms | "
            f"{_met(result, prefix + 'max_stall_ms', TARGET_STALL_MS)} |",
            f"| ... worst on CPU | {_ms(result, prefix + 'max_stall_on_cpu_ms')} | <= {TARGET_STALL_MS} ms | "
            f"{_met(result, prefix + 'max_stall_on_cpu_ms', TARGET_STALL_MS)} |",
            f"| ... worst in ticks where neither thread waited for a CPU "
            f"({100 * result.get(prefix + 'quiet_tick_share', 0):.0f}% of ticks) | "
            f"{_ms(result, prefix + 'max_stall_no_os_wait_ms')} | <= {TARGET_STALL_MS} ms | "
            f"{_met(result, prefix + 'max_stall_no_os_wait_ms', TARGET_STALL_MS)} |",
            f"| ... p99 / median lateness | {_ms(result, prefix + 'p99_stall_ms')} / "
            f"{_ms(result, prefix + 'median_stall_ms')} | | |",
            f"| ... baseline without the log (list sink): worst / worst on CPU / p99 | "
            f"{_ms(result, prefix + 'baseline_max_stall_ms')} / {_ms(result, prefix + 'baseline_max_stall_on_cpu_ms')}"
            f" / {_ms(result, prefix + 'baseline_p99_stall_ms')} | | |",
            f"| ... worst single run: with the log / baseline | {_ms(result, prefix + 'worst_stall_ms')} / "
            f"{_ms(result, prefix + 'baseline_worst_stall_ms')} | | |",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    section = render(run(n))
    print(section)
    write_section("decision_log", section)
