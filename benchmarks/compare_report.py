"""Tables of `benchmarks/compare.py`: medians over the runs, our added overhead as a fraction of
LiteLLM's, the DESIGN.md targets, and every raw number."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

NOT_MEASURED = "not measured"
TARGET_RATIO = 0.1  # DESIGN.md: at most a tenth of LiteLLM Router's added overhead
TARGETS = {"fallback_ms": 0.5, "cache_us": 30.0, "rss_ratio": 1.2, "serve_added_ms": 1.0}
NAMES = {"raw": "raw openai SDK", "ours": "our Router", "litellm": "LiteLLM Router"}


def _med(rows: list[dict[str, Any]], field: str) -> float:
    vals = [r["result"][field] for r in rows if field in r.get("result", {})]
    return statistics.median(vals) if vals else float("nan")


def _by_rep(rows: list[dict[str, Any]], field: str) -> dict[int, float]:
    """`field` of each run, by repetition: runs of one repetition ran back to back, so they pair."""
    return {r["spec"]["rep"]: r["result"][field] for r in rows if field in r["result"]}


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def _signed(x: float) -> str:
    return "n/a" if x != x else f"{x:+.3f}"


def _ratio(ours: float, lite: float) -> str:
    if ours != ours or lite != lite or lite <= 0:
        return "n/a"
    return f"{ours / lite:.3f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**MISSED**")


class Runs:
    """The library rows, grouped by variant key."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            self.by[r["spec"]["key"]].append(r)

    def get(self, kind: str, lat: int, conc: int, system: str, deps: int = 1, log: bool = True) -> list[dict[str, Any]]:
        """The runs of one variant."""
        return self.by.get(f"{kind}/{lat}ms/c{conc}/{system}/d{deps}" + ("" if log else "/nolog"), [])

    def med(self, field: str, *key: Any, **kw: Any) -> float:
        """Median of `field` over the runs of one variant."""
        return _med(self.get(*key, **kw), field)

    def paired(self, field: str, kind: str, lat: int, conc: int, deps: int,
               log: bool = True) -> tuple[float, float, str]:
        """(ours added, LiteLLM added, per-repetition ratios): each minus the raw run of its repetition."""
        raw = _by_rep(self.get(kind, lat, conc, "raw"), field)
        ours = {k: v - raw[k] for k, v in _by_rep(self.get(kind, lat, conc, "ours", deps, log), field).items()
                if k in raw}
        lite = {k: v - raw[k] for k, v in _by_rep(self.get(kind, lat, conc, "litellm", deps), field).items()
                if k in raw}
        per = [_ratio(ours[k], lite[k]) for k in sorted(ours) if k in lite]
        nan = float("nan")
        return (statistics.median(ours.values()) if ours else nan, statistics.median(lite.values()) if lite else nan,
                f"[{', '.join(per)}]" if per else "")

    def checks(self) -> list[str]:
        """Every variant run whose call counts were wrong."""
        return [f"{k} (run {r['spec']['rep'] + 1}): {r['result']['check']}" for k, rs in self.by.items() for r in rs
                if r["result"].get("check") != "ok"]


def library_tables(runs: Runs) -> tuple[list[str], dict[str, Any]]:
    """Table 1 (p50/p99/CPU per variant) and table 1b (added overhead, ours / LiteLLM)."""
    out = ["### 1. Library path: raw SDK vs our Router vs LiteLLM Router", "",
           "| upstream | conc. | system | deployments | p50 ms | p99 ms | req/s | CPU ms/req | added p50 ms | "
           "added CPU ms/req |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    over = ["", "#### 1b. Added overhead over the raw SDK: ours as a fraction of LiteLLM's (target <= 0.1)", "",
            "Each run's figure is paired with the raw SDK run of the same repetition (they ran back to back); the "
            "table gives the median over the repetitions and, in brackets, each repetition's own ratio.", "",
            "| upstream | conc. | deployments | ours added p50 | LiteLLM added p50 | **ratio p50** [per run] | "
            "ours added CPU | LiteLLM added CPU | **ratio CPU** [per run] |",
            "|---|---:|---|---:|---:|---|---:|---:|---|"]
    head: dict[str, Any] = {}
    for lat in (0, 50):
        for conc in (1, 32):
            raw_p50, raw_cpu = runs.med("p50_ms", "library", lat, conc, "raw"), runs.med("cpu_ms", "library", lat,
                                                                                          conc, "raw")
            rows: list[tuple[str, int, bool]] = [("raw", 1, True), ("ours", 1, True), ("ours", 2, True),
                                                 ("ours", 1, False), ("litellm", 1, True), ("litellm", 2, True)]
            for system, deps, log in rows:
                rs = runs.get("library", lat, conc, system, deps, log)
                if not rs and system == "ours" and not log:
                    continue
                label = NAMES[system] + ("" if log else " (decision log off)")
                dep = "1" if deps == 1 else "2, with fallback"
                if not rs:
                    out.append(f"| {lat} ms | {conc} | {label} | {dep} | {NOT_MEASURED} | | | | | |")
                    continue
                p50, cpu = _med(rs, "p50_ms"), _med(rs, "cpu_ms")
                added = "-" if system == "raw" else f"{p50 - raw_p50:+.3f}"
                added_cpu = "-" if system == "raw" else f"{cpu - raw_cpu:+.3f}"
                out.append(f"| {lat} ms | {conc} | {label} | {dep} | {_f(p50)} | {_f(_med(rs, 'p99_ms'))} | "
                           f"{_f(_med(rs, 'rps'), 0)} | {_f(cpu)} | {added} | {added_cpu} |")
            for deps, log in ((1, True), (2, True), (1, False)):
                if not log and not runs.get("library", lat, conc, "ours", deps, log):
                    continue
                o_p50, l_p50, p50_ratios = runs.paired("p50_ms", "library", lat, conc, deps, log)
                o_cpu, l_cpu, cpu_ratios = runs.paired("cpu_ms", "library", lat, conc, deps, log)
                label = f"{deps}" + ("" if log else " (ours: decision log off)")
                over.append(f"| {lat} ms | {conc} | {label} | {_f(o_p50)} ms | {_f(l_p50)} ms | "
                            f"{_ratio(o_p50, l_p50)} {p50_ratios} | {_f(o_cpu)} ms | {_f(l_cpu)} ms | "
                            f"{_ratio(o_cpu, l_cpu)} {cpu_ratios} |")
                if log:
                    head[f"{lat}-{conc}-{deps}"] = (o_p50, l_p50, o_cpu, l_cpu)
    return out + over, head


def machinery_table(runs: Runs) -> list[str]:
    """Table 1c: each router's own work per request, with no network and no SDK."""
    out = ["", "#### 1c. Routing machinery alone: no upstream, no SDK (concurrency 1)", "",
           "Ours over an in-process adapter that answers at once (decision log on); LiteLLM Router with "
           "`mock_response` (its router and `litellm.acompletion`, no HTTP call). A low-noise view of what each "
           "router itself costs per request.", "",
           "| system | p50 µs | p99 µs | CPU µs/req | ours / LiteLLM (p50, CPU) |", "|---|---:|---:|---:|---|"]
    o = (runs.med("p50_ms", "machinery", 0, 1, "ours"), runs.med("cpu_ms", "machinery", 0, 1, "ours"))
    li = (runs.med("p50_ms", "machinery", 0, 1, "litellm"), runs.med("cpu_ms", "machinery", 0, 1, "litellm"))
    for system in ("ours", "litellm"):
        rs = runs.get("machinery", 0, 1, system)
        if not rs:
            out.append(f"| {NAMES[system]} | {NOT_MEASURED} | | | |")
            continue
        ratio = f"{_ratio(o[0], li[0])}, {_ratio(o[1], li[1])}" if system == "ours" else ""
        out.append(f"| {NAMES[system]} | {_med(rs, 'p50_ms') * 1000:.1f} | {_med(rs, 'p99_ms') * 1000:.1f} | "
                   f"{_med(rs, 'cpu_ms') * 1000:.1f} | {ratio} |")
    return out


def idle_table(runs: Runs) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Table 1d: CPU per request at 0 ms upstream, at 50 ms, and at 0 ms with a 50 ms local idle after
    each request; and {"system-conc": (CPU at 50 ms minus CPU with the idle gap, median of the runs'
    pairs; CPU at 0 ms)}."""
    out = ["", "#### 1d. CPU while waiting: 50 ms upstream against 0 ms with a 50 ms idle gap", "",
           "CPU per request rises at 50 ms upstream. The idle variant asks the upstream at 0 ms and then "
           "sleeps 50 ms (`asyncio.sleep`, in each of the tasks) before its next request: the 50 ms cells' pattern "
           "with no upstream wait, so its CPU includes what this machine charges a process for idling (waking a "
           "sleeping VM, cold caches). CPU at 50 ms upstream minus the idle variant's, paired by run, is what the "
           "process spends on the wait itself (its timers, its log writer's wake-ups, the socket): zero or less "
           "means nothing beyond the idle gap.", "",
           "| conc. | system | CPU ms/req, 0 ms upstream | 50 ms upstream | 0 ms + 50 ms idle | 50 ms upstream "
           "minus the idle gap [per run] |", "|---:|---|---:|---:|---:|---|"]
    wait: dict[str, tuple[float, float]] = {}
    for conc in (1, 32):
        for system in ("raw", "ours", "litellm"):
            idle = _by_rep(runs.get("idle", 0, conc, system), "cpu_ms")
            if not idle:
                out.append(f"| {conc} | {NAMES[system]} | {NOT_MEASURED} | | | |")
                continue
            up = _by_rep(runs.get("library", 50, conc, system), "cpu_ms")
            per = [up[k] - idle[k] for k in sorted(idle) if k in up]
            w = statistics.median(per) if per else float("nan")
            cpu0 = runs.med("cpu_ms", "library", 0, conc, system)
            wait[f"{system}-{conc}"] = (w, cpu0)
            out.append(f"| {conc} | {NAMES[system]} | {_f(cpu0)} | "
                       f"{_f(runs.med('cpu_ms', 'library', 50, conc, system))} | "
                       f"{_f(statistics.median(idle.values()))} | {_signed(w)} "
                       f"[{', '.join(f'{x:+.3f}' for x in per)}] |")
    return out, wait


def failure_table(runs: Runs) -> tuple[list[str], dict[str, float]]:
    """Table 2: served through the fallback after a 500 on every first attempt."""
    out = ["", "### 2. Failure path: the first deployment answers 500 every time", "",
           "| upstream | system | p50 ms | p99 ms | CPU ms/req | beyond the two calls, p50 ms | ours / LiteLLM |",
           "|---|---|---:|---:|---:|---:|---:|"]
    beyond: dict[str, float] = {}
    for lat in (0, 50):
        base = runs.med("p50_ms", "failure", lat, 1, "raw", 2)
        vals = {s: runs.med("p50_ms", "failure", lat, 1, s, 2) - base for s in ("ours", "litellm")}
        for system in ("raw", "ours", "litellm"):
            rs = runs.get("failure", lat, 1, system, 2)
            if not rs:
                out.append(f"| {lat} ms | {NAMES[system]} | {NOT_MEASURED} | | | | |")
                continue
            label = "raw openai SDK (the app catches the 500, calls the backup)" if system == "raw" else NAMES[system]
            extra = "-" if system == "raw" else f"{vals[system]:+.3f}"
            ratio = _ratio(vals["ours"], vals["litellm"]) if system == "ours" else ""
            out.append(f"| {lat} ms | {label} | {_f(_med(rs, 'p50_ms'))} | {_f(_med(rs, 'p99_ms'))} | "
                       f"{_f(_med(rs, 'cpu_ms'))} | {extra} | {ratio} |")
        beyond[f"ours-{lat}"], beyond[f"litellm-{lat}"] = vals["ours"], vals["litellm"]
    return out, beyond


def cache_table(runs: Runs) -> tuple[list[str], float]:
    """Table 3: exact cache hits from each router's in-memory cache."""
    out = ["", "### 3. Cache hit: one identical request repeated (temperature 0), in-memory caches", "",
           "| system | hit p50 µs | hit p99 µs | CPU µs/hit | calls that reached the upstream |",
           "|---|---:|---:|---:|---:|"]
    for system in ("ours", "litellm"):
        rs = runs.get("cache", 0, 1, system)
        if not rs:
            out.append(f"| {NAMES[system]} | {NOT_MEASURED} | | | |")
            continue
        calls = ", ".join(str(r["result"].get("upstream_calls", {}).get("a", "?")) for r in rs)
        out.append(f"| {NAMES[system]} | {_med(rs, 'p50_ms') * 1000:.1f} | {_med(rs, 'p99_ms') * 1000:.1f} | "
                   f"{_med(rs, 'cpu_ms') * 1000:.1f} | {calls} (of {rs[0]['spec']['n'] + rs[0]['spec']['warmup']}"
                   " requests, per run) |")
    return out, runs.med("p50_ms", "cache", 0, 1, "ours") * 1000


def stream_table(runs: Runs) -> tuple[list[str], dict[str, float]]:
    """Table 3b: library streaming, time to the first content chunk, each system over the same fake."""
    out = ["", "### 3b. Streaming in the library: time to the first content chunk (concurrency 1, upstream 0 ms)", "",
           "Each request reads its whole stream (so connections are reused as an app's would be); the time is "
           "from the call to the first chunk with text. Added = minus the raw SDK's run of the same repetition, "
           "median over the repetitions.", "",
           "| system | transport | first chunk p50 ms | p99 ms | added p50 vs raw SDK [per run] |",
           "|---|---|---:|---:|---:|"]
    raw = _by_rep(runs.by.get("stream/0ms/c1/raw/d1", []), "ttfc_p50_ms")
    added: dict[str, float] = {}
    for key, system, transport in (("stream/0ms/c1/raw/d1", "raw", "the SDK's"),
                                   ("stream/0ms/c1/ours/d1", "ours", "http (default)"),
                                   ("stream/0ms/c1/ours/d1/sdk", "ours", "sdk"),
                                   ("stream/0ms/c1/litellm/d1", "litellm", "its own")):
        rs = [r for r in runs.by.get(key, []) if "ttfc_p50_ms" in r["result"]]
        if not rs:
            out.append(f"| {NAMES[system]} | {transport} | {NOT_MEASURED} | | |")
            continue
        per = [r["result"]["ttfc_p50_ms"] - raw[r["spec"]["rep"]] for r in rs if r["spec"]["rep"] in raw]
        cell = "-" if system == "raw" or not per else \
            f"{statistics.median(per):+.3f} [{', '.join(f'{x:+.3f}' for x in per)}]"
        if system != "raw" and per:
            added[key] = statistics.median(per)
        out.append(f"| {NAMES[system]} | {transport} | {_f(_med(rs, 'ttfc_p50_ms'))} | {_f(_med(rs, 'ttfc_p99_ms'))} "
                   f"| {cell} |")
    return out, added


def footprint_table(runs: Runs, numpy_installed: bool = False) -> tuple[list[str], float]:
    """Table 4: import time, RSS after import and after the requests (fresh process each)."""
    out = ["", "### 4. Footprint (fresh process; requests at concurrency 32, upstream 0 ms)", "",
           "| system | import ms | first answer s (import + build + 1st request) | RSS python alone MiB | "
           "RSS after import MiB | RSS after requests MiB | peak RSS MiB | RSS after requests vs raw SDK app |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    raw_rss = statistics.median([r["result"]["rss_after_kb"] for r in runs.get("footprint", 0, 32, "raw")] or [0])
    ours_ratio = float("nan")
    for system in ("raw", "ours", "litellm"):
        rs = runs.get("footprint", 0, 32, system)
        if not rs:
            out.append(f"| {NAMES[system]} | {NOT_MEASURED} | | | | | | |")
            continue

        def p(field: str, rs: list[dict[str, Any]] = rs) -> float:
            return float(statistics.median(r["process"][field] for r in rs))

        rss = _med(rs, "rss_after_kb")
        ratio = rss / raw_rss if raw_rss else float("nan")
        ours_ratio = ratio if system == "ours" else ours_ratio
        out.append(f"| {NAMES[system]} | {p('import_s') * 1000:.0f} | {p('first_answer_s'):.3f} | "
                   f"{p('rss_start_kb') / 1024:.1f} | {p('rss_import_kb') / 1024:.1f} | {rss / 1024:.1f} | "
                   f"{_med(rs, 'hwm_after_kb') / 1024:.1f} | {ratio:.2f}x |")
    if runs.get("footprint", 0, 32, "raw"):
        out.append(f"\nRequests per footprint run: {runs.get('footprint', 0, 32, 'raw')[0]['spec']['n']:,} "
                   "(after the warm-up)." + (" numpy is installed in this environment (litellm's cache path needs "
                                             "soundfile, which brings it): a library that imports numpy when it is "
                                             "present pays ~11 MiB for it here." if numpy_installed else ""))
    return out, ours_ratio


def service_table(services: list[dict[str, Any]], skipped: bool) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Table 5: the services, one worker each, over the same fake."""
    out = ["", "### 5. Service: one worker each, no database, same fake upstream (0 ms)", ""]
    if skipped:
        return out + [f"{NOT_MEASURED}: run with --no-service"], {}
    out += ["| target | version | startup s | req/s | p50 ms | p99 ms | p50 ms @1 conn | p99 ms @1 conn | "
            "added p50 @1 conn | stream first chunk ms @1 conn | added first chunk | service CPU ms/req | "
            "req per service CPU-second | RSS MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in services:
        by[r["target"]].append(r)
    floor = _med(by.get("fake upstream, direct", []), "p50_1c")
    floor_ttfc = _med(by.get("fake upstream, direct", []), "ttfc_p50_1c")
    summary: dict[str, dict[str, float]] = {}
    failed: list[str] = []
    for name in ("fake upstream, direct", "engine serve", "engine serve (transport: sdk)", "engine serve (cache hit)",
                 "LiteLLM proxy", "Portkey gateway"):
        rs = [r for r in by.get(name, []) if "result" in r]
        if not rs:
            why = next((r["missing"] for r in by.get(name, []) if "missing" in r), NOT_MEASURED)
            out.append(f"| {name} | {why} | | | | | | | | | | | | |")
            continue
        p50_1c, cpu = _med(rs, "p50_1c"), _med(rs, "cpu_ms_per_req")
        ttfc = _med(rs, "ttfc_p50_1c")
        added = "-" if name.startswith("fake") else f"{p50_1c - floor:+.3f} ms"
        added_ttfc = "-" if name.startswith("fake") else (
            "n/a: no stream answered 200" if ttfc != ttfc else f"{ttfc - floor_ttfc:+.3f} ms")
        out.append(f"| {name} | {rs[0]['version']} | {_f(_med(rs, 'startup_s'), 1)} | {_f(_med(rs, 'rps'), 0)} | "
                   f"{_f(_med(rs, 'p50'))} | {_f(_med(rs, 'p99'))} | {_f(p50_1c)} | {_f(_med(rs, 'p99_1c'))} | "
                   f"{added} | {_f(ttfc)} | {added_ttfc} | "
                   f"{_f(cpu)} | {_f(1000 / cpu if cpu == cpu else cpu, 0)} | {_f(_med(rs, 'rss_kb') / 1024, 1)} |")
        summary[name] = {"rps": _med(rs, "rps"), "per_cpu_s": 1000 / cpu if cpu == cpu else cpu,
                         "added": p50_1c - floor, "added_ttfc": ttfc - floor_ttfc}
        if ttfc != ttfc:
            bad = sorted({k for r in rs for k in r["result"]["statuses"] if k != "200"})
            failed.append(f"{name} answered every streamed request with HTTP {'/'.join(bad) or '?'}")
    if failed:
        out += ["", "No first-chunk figure where a service never streamed: " + "; ".join(failed) + " (every "
                "answer of each run is counted by status in the raw numbers)."]
    return out, summary


def targets(head: dict[str, Any], beyond: dict[str, float], cache_us: float, rss_ratio: float,
            service: dict[str, dict[str, float]], stream_added: dict[str, float] | None = None,
            wait: dict[str, tuple[float, float]] | None = None) -> list[str]:
    """The DESIGN.md targets (and issue 16's), met or missed, from this run's numbers."""
    out = ["", "### Targets (DESIGN.md), from this run", "", "| target | this run | verdict |", "|---|---|---|"]
    for conc in (1, 32):
        for deps in (1, 2):
            o, lite, oc, lc = head.get(f"0-{conc}-{deps}", (float("nan"),) * 4)
            ok = None if lite != lite or lite <= 0 else o <= TARGET_RATIO * lite
            okc = None if lc != lc or lc <= 0 else oc <= TARGET_RATIO * lc
            out.append(f"| added overhead <= 1/10 of LiteLLM's (upstream 0 ms, conc. {conc}, {deps} deployment"
                       f"{'s' if deps > 1 else ''}): wall p50 / CPU | ratio {_ratio(o, lite)} / {_ratio(oc, lc)} "
                       f"({_f(o)} vs {_f(lite)} ms; CPU {_f(oc)} vs {_f(lc)} ms) | {_verdict(ok)} / {_verdict(okc)} |")
    fb = beyond.get("ours-0", float("nan"))
    out.append(f"| fallback machinery <= 0.5 ms beyond the two vendor calls (0 ms) | {_f(fb)} ms (LiteLLM "
               f"{_f(beyond.get('litellm-0', float('nan')))} ms) | {_verdict(None if fb != fb else fb <= 0.5)} |")
    out.append(f"| exact cache hit <= 30 µs p50 | {_f(cache_us, 1)} µs | "
               f"{_verdict(None if cache_us != cache_us else cache_us <= TARGETS['cache_us'])} |")
    for key, label in (("stream/0ms/c1/ours/d1", "default transport (http)"),
                       ("stream/0ms/c1/ours/d1/sdk", "transport: sdk")):
        at = (stream_added or {}).get(key, float("nan"))
        out.append(f"| library streaming first chunk added <= 0.2 ms over the raw SDK, {label} | {at:+.3f} ms | "
                   f"{_verdict(None if at != at else at <= 0.2)} |")
    nan4 = (float("nan"),) * 4
    for conc in (1, 32):
        # Issue 16 item 3, "idle CPU at 50 ms upstream back to the 0 ms figure": read against the 0 ms
        # figure with the same 50 ms idle (table 1d), since this machine charges any process for idling;
        # "back to" within a tenth of our CPU per request at 0 ms, as a zero bar would judge noise.
        w, c0 = (wait or {}).get(f"ours-{conc}", (float("nan"),) * 2)
        at0, at50 = head.get(f"0-{conc}-1", nan4)[2], head.get(f"50-{conc}-1", nan4)[2]
        out.append(f"| CPU at 50 ms upstream back to the 0 ms figure (issue 16), conc. {conc}: ours at 50 ms minus "
                   f"ours at 0 ms with the same 50 ms idle <= 1/10 of ours at 0 ms (table 1d) | {_signed(w)} ms "
                   f"(bar {_f(0.1 * c0)} ms; added CPU over the raw SDK: {_signed(at50)} ms at 50 ms, "
                   f"{_signed(at0)} ms at 0 ms) | {_verdict(None if w != w or c0 != c0 else w <= 0.1 * c0)} |")
    out.append(f"| RSS <= 1.2x the raw-SDK app | {_f(rss_ratio, 2)}x | "
               f"{_verdict(None if rss_ratio != rss_ratio else rss_ratio <= TARGETS['rss_ratio'])} |")
    ours, pk = service.get("engine serve"), service.get("Portkey gateway")
    if ours is None:
        out.append(f"| engine serve >= Portkey per core | {NOT_MEASURED} | n/a |")
    else:
        ref = f"Portkey {pk['per_cpu_s']:.0f} req/CPU-s, {pk['rps']:.0f} req/s" if pk else "Portkey not measured; " \
              "DESIGN.md: ~780 req/s on one core"
        goal = pk["per_cpu_s"] if pk else 780.0
        out.append(f"| engine serve >= Portkey gateway per core | {ours['per_cpu_s']:.0f} req per CPU-second, "
                   f"{ours['rps']:.0f} req/s ({ref}) | {_verdict(ours['per_cpu_s'] >= goal)} |")
        out.append(f"| engine serve p50 added at 1 connection <= 1 ms | {ours['added']:+.3f} ms | "
                   f"{_verdict(ours['added'] <= TARGETS['serve_added_ms'])} |")
        if pk:
            times = ours["rps"] / pk["rps"] if pk["rps"] > 0 else float("nan")
            out.append(f"| default engine serve >= 3x Portkey's req/s, one worker each (issue 16) | {times:.2f}x "
                       f"({ours['rps']:.0f} vs {pk['rps']:.0f} req/s) | "
                       f"{_verdict(None if times != times else times >= 3)} |")
        at = ours.get("added_ttfc", float("nan"))
        # Issue 16's 0.2 ms bar is the library's on each transport (rows above, over the raw SDK);
        # a streamed request through the service is held to the service's bar, like any other.
        out.append(f"| engine serve: streaming first chunk added at 1 connection <= 1 ms (the service hop: through "
                   f"the service vs the fake direct, not vs a client library) | {at:+.3f} ms "
                   f"({'within' if at <= 0.2 else 'more than'} the library's 0.2 ms) | "
                   f"{_verdict(None if at != at else at <= TARGETS['serve_added_ms'])} |")
        hit = service.get("engine serve (cache hit)")
        if hit:
            out.append(f"| engine serve, exact cache hit (no target: issue 16 asks it measured) | "
                       f"{hit['added']:+.3f} ms p50 at 1 connection over the fake direct, {hit['rps']:.0f} req/s, "
                       f"{hit['per_cpu_s']:.0f} req per CPU-second | - |")
    return out


def raw_numbers(library: list[dict[str, Any]], services: list[dict[str, Any]]) -> list[str]:
    """Every run, as measured."""
    out = ["", "<details><summary>Raw numbers: every run</summary>", "",
           "| variant | run | n | p50 ms | p99 ms | mean ms | req/s | CPU ms/req | upstream calls a/b/down | load1 | "
           "import ms | check |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in sorted(library, key=lambda r: (r["spec"]["key"], r["spec"]["rep"])):
        res, c = r["result"], r["result"].get("upstream_calls", {})
        out.append(f"| {r['spec']['key']} | {r['spec']['rep'] + 1} | {res['n']} | {res['p50_ms']:.3f} | "
                   f"{res['p99_ms']:.3f} | {res['mean_ms']:.3f} | {res['rps']:.0f} | {res['cpu_ms']:.3f} | "
                   f"{c.get('a')}/{c.get('b')}/{c.get('down')} | {r['load1_before']:.2f} | "
                   f"{r['process']['import_s'] * 1000:.0f} | {res['check']} |")
    out += ["", "| service | run | req/s | p50 | p99 | p50 @1c | p99 @1c | requests | CPU s | statuses | "
            "net refused | load1 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in services:
        if "result" not in r:
            continue
        s = r["result"]
        out.append(f"| {r['target']} | {r['rep'] + 1} | {s['rps']:.0f} | {s['p50']:.3f} | {s['p99']:.3f} | "
                   f"{s['p50_1c']:.3f} | {s['p99_1c']:.3f} | {s['requests']} | {s.get('cpu_s', float('nan')):.2f} | "
                   f"{s['statuses']} | {s['net_blocked']} | {s['load1']:.2f} |")
    return out + ["", "</details>"]


def render(info: dict[str, Any], library: list[dict[str, Any]], services: list[dict[str, Any]]) -> str:
    """The whole section."""
    runs = Runs(library)
    v = info["versions"]
    blocked = sum(len(r["process"]["net_blocked"]) for r in library) + sum(
        r["result"]["net_blocked"] for r in services if "result" in r)
    head = ["## Side by side with LiteLLM (benchmarks/compare.py)", "",
            f"{info['machine']}; {info['cores']} cores; {info['platform']}; run started {info['started']}.",
            f"Load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in info['load_start'])}, at end "
            f"{'/'.join(f'{x:.2f}' for x in info['load_end'])} (other work shares this machine; every variant ran "
            f"{info['reps']} times in alternating order; tables show medians over the runs).",
            f"Versions: Python {v['python']}, openai {v['openai']}, httpx {v['httpx']}, pydantic {v['pydantic']}, "
            f"litellm {v['litellm']} (library), aiohttp {v['aiohttp']}, uvicorn {v['uvicorn']}, uvloop {v['uvloop']}.",
            f"Command: `{info['command'].strip()}` (env: LITELLM_LOCAL_MODEL_COST_MAP=True, LITELLM_OFFLINE_MODE=true;"
            " every Python process runs with an audit hook that refuses non-loopback connections and lookups: "
            f"{blocked} refused in this run).", "",
            "Setup: one fake OpenAI-compatible upstream (`python -m tests.fakes`, its own process, keep-alive), "
            "fixed latency 0 ms or 50 ms; each variant talks to its own channels of it, and the fake's call counts "
            "per channel confirm the routing (raw numbers, `check`). Both routers: no retries (a 500 falls back at "
            "once), SDK retries off; our Router writes its SQLite decision log unless said otherwise; LiteLLM's "
            "failure variant runs with cooldowns disabled, ours with health demotion out of reach, so both try the "
            "failing deployment every time. CPU = process time (all threads) / requests. Added = median minus the "
            "raw SDK's median in the same cell. 2 deployments = a primary and a configured fallback (not needed).",
            "", "Reproduce: `pip install -e '.[test,bench]'` (litellm for the library rows); the LiteLLM proxy in a "
            "venv of its own (`python -m venv V && V/bin/pip install 'litellm[proxy]'`: its extra pins rich<14, "
            "which this project's venv should not get), `npm install --prefix DIR @portkey-ai/gateway`; then "
            "`LITELLM_PROXY_PYTHON=V/bin/python PORTKEY_GATEWAY_DIR=DIR python -m benchmarks.compare --reps 3`. "
            "`--profile DIR` writes pyinstrument profiles of our variants instead.", ""]
    if info.get("quick"):
        head.insert(2, "**--quick: tiny counts, each system's variants in one process: a smoke run, not results.**\n")
    if info.get("litellm_missing"):
        head.insert(2, f"**LiteLLM not measured (not installed, or --no-litellm): its rows say {NOT_MEASURED}.**\n")
    lib, ratios = library_tables(runs)
    fail, beyond = failure_table(runs)
    cache, cache_us = cache_table(runs)
    stream, stream_added = stream_table(runs)
    idle, wait = idle_table(runs)
    foot, rss_ratio = footprint_table(runs, bool(info.get("numpy_installed")))
    serv, service = service_table(services, info.get("service_skipped", False))
    checks = runs.checks() + [f"service {r['target']} (run {r['rep'] + 1}): {r['check']}" for r in services
                              if "check" in r and r["check"] != "ok"]
    check_lines = ["", "**CHECK FAILED** (a run's upstream call counts contradict its routing, or it answered "
                   "errors): " + "; ".join(checks)] \
        if checks else ["", "Routing checks: every run's upstream call counts matched its routing."]
    body = head + lib + machinery_table(runs) + idle + fail + cache + stream + foot + serv + targets(
        ratios, beyond, cache_us, rss_ratio, service, stream_added, wait)
    return "\n".join(body + check_lines + raw_numbers(library, services)) + "\n"
