"""Side by side with LiteLLM: the library path, the fallback path, cache hits, footprint and the service,
all against the same fake OpenAI-compatible upstream on 127.0.0.1, in one run.

    LITELLM_PROXY_PYTHON=/path/to/venv-with-litellm-proxy/bin/python \\
    python -m benchmarks.compare [--reps 2] [--portkey-dir DIR] [--quick] [--no-write]

Library: the raw `openai` SDK, our `Router` and LiteLLM's `Router` (one deployment; two with a
fallback), at concurrency 1 and 32, upstream latency 0 and 50 ms; and each router's own work alone
(ours over an in-process adapter that answers at once, LiteLLM with its `mock_response`). Failure:
the first deployment answers 500 every time. Cache: one identical request repeated. Footprint:
import time, RSS after import and after 10,000 requests. Idle: 0 ms upstream, then 50 ms of local
idle before each next request (what idling itself costs on this machine, set against the 50 ms
cells). Service: `engine serve`, the LiteLLM proxy and (if installed) the Portkey gateway, one
worker each. Every variant runs in a fresh process (`compare_worker`), at least twice, in an order
that alternates between repetitions so drift on a shared machine hits every system alike; the fake
counts the calls each variant made to each deployment, and a variant whose counts are not what its
routing implies is flagged. Everything is offline: LiteLLM runs with its local cost map, and a guard
in every Python process refuses any non-loopback connection.
`--quick` runs each system's variants in one process with tiny counts (the smoke test) and leaves
RESULTS.md alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import compare_service as svc
from benchmarks._results import machine, write_section
from benchmarks.compare_report import render
from benchmarks.compare_worker import OFFLINE_ENV, REPO
from tests.fakes import spawn_fake

# (n, warmup) per measured cell, full run / --quick
COUNTS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "library-0-1": ((1000, 100), (20, 3)), "library-0-32": ((2000, 100), (64, 3)),
    "library-50-1": ((200, 10), (5, 2)), "library-50-32": ((640, 32), (64, 2)),
    "failure-0-1": ((300, 30), (10, 2)), "failure-50-1": ((60, 5), (3, 1)),
    "cache-0-1": ((2000, 10), (20, 2)), "footprint-0-32": ((10_000, 100), (100, 3)),
    "machinery-0-1": ((3000, 300), (50, 5)), "stream-0-1": ((1000, 100), (20, 3)),
    "idle-0-1": ((200, 10), (5, 2)), "idle-0-32": ((640, 32), (64, 2)),
}
# The idle variant: 0 ms upstream, then this long idle locally before the next request. Its CPU is
# what this machine charges any process for a 50 ms gap (a sleeping VM's wake-up, cold caches), so
# CPU at 50 ms upstream minus it is what the process spends on the wait itself.
IDLE_PAUSE_MS = 50


def variants() -> list[dict[str, Any]]:
    """Every (kind, latency, concurrency, system, deployments, log) measured, grouped in cells."""
    out: list[dict[str, Any]] = []
    for lat in (0, 50):
        for conc in (1, 32):
            cell = f"library-{lat}-{conc}"
            out.append(dict(kind="library", cell=cell, latency=lat, concurrency=conc, system="raw", deployments=1))
            for system in ("ours", "litellm"):
                for deps in (1, 2):
                    out.append(dict(kind="library", cell=cell, latency=lat, concurrency=conc, system=system,
                                    deployments=deps))
            if lat == 0:  # what the decision log costs: our Router without it
                out.append(dict(kind="library", cell=cell, latency=lat, concurrency=conc, system="ours",
                                deployments=1, log=False))
    for conc in (1, 32):  # 0 ms upstream, then a 50 ms local idle: the 50 ms cells' pattern, no upstream wait
        for system in ("raw", "ours", "litellm"):
            out.append(dict(kind="idle", cell=f"idle-0-{conc}", latency=0, concurrency=conc, system=system,
                            deployments=1, pause_ms=IDLE_PAUSE_MS))
    for system in ("ours", "litellm"):  # no upstream at all: each router's own work per request
        out.append(dict(kind="machinery", cell="machinery-0-1", latency=0, concurrency=1, system=system,
                        deployments=1))
    for lat in (0, 50):
        for system in ("raw", "ours", "litellm"):
            out.append(dict(kind="failure", cell=f"failure-{lat}-1", latency=lat, concurrency=1, system=system,
                            deployments=2))
    for system in ("ours", "litellm"):
        out.append(dict(kind="cache", cell="cache-0-1", latency=0, concurrency=1, system=system, deployments=1))
    for system, transport in (("raw", None), ("ours", None), ("ours", "sdk"), ("litellm", None)):
        # streamed, time to the first content chunk: ours on its default transport and on the SDK's
        out.append(dict(kind="stream", cell="stream-0-1", latency=0, concurrency=1, system=system, deployments=1,
                        transport=transport))
    for system in ("raw", "ours", "litellm"):
        out.append(dict(kind="footprint", cell="footprint-0-32", latency=0, concurrency=32, system=system,
                        deployments=1))
    for v in out:
        v.setdefault("log", True)
        v.setdefault("transport", None)
        v.setdefault("pause_ms", 0)
        v["key"] = "{kind}/{latency}ms/c{concurrency}/{system}/d{deployments}".format(**v) + (
            "" if v["log"] else "/nolog") + (f"/{v['transport']}" if v["transport"] else "")
    return out


def _channel(v: dict[str, Any], rep: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{v['key']}-r{rep}".lower())


def prepare(v: dict[str, Any], rep: int, fakes: dict[int, Any], tmp: Path, quick: bool) -> dict[str, Any]:
    """The worker spec of one variant in one repetition: its own channels on the fake, its own files."""
    fake = fakes[v["latency"]]
    ch = _channel(v, rep)
    n, warmup = COUNTS[v["cell"]][1 if quick else 0]
    if v["kind"] == "failure":
        fake.set_mode(f"{ch}-down", "server_error")
    return {**v, "n": n, "warmup": warmup, "rep": rep, "ok_url": fake.channel_url(f"{ch}-a"),
            "backup_url": fake.channel_url(f"{ch}-b"), "down_url": fake.channel_url(f"{ch}-down"),
            "tmp": str(tmp / ch), "channel": ch}


def check(spec: dict[str, Any], res: dict[str, Any], calls: dict[str, int]) -> str:
    """'ok', or what the fake's call counts say went wrong with this variant's routing."""
    ch, total = spec["channel"], spec["n"] + spec["warmup"]
    a, b, down = (calls.get(f"{ch}-{s}", 0) for s in ("a", "b", "down"))
    if spec["kind"] == "failure":
        want = {"down": total, "b": total, "a": 0}
        served = {"backup": spec["n"]}
    elif spec["kind"] == "machinery":
        want = {"a": 0, "b": 0, "down": 0}
        served = {"primary": spec["n"]}
    elif spec["kind"] == "cache":
        want = {"a": a if 1 <= a <= 2 else 1, "b": 0, "down": 0}  # LiteLLM stores after answering: 2 is fair
        served = {"primary": spec["n"]}
    else:
        want = {"a": total, "b": 0, "down": 0}
        served = {"primary": spec["n"]}
    got = {"a": a, "b": b, "down": down}
    problems = [f"{k}: {got[k]} calls, expected {w}" for k, w in want.items() if got[k] != w]
    if res.get("served") != served:
        problems.append(f"served by {res.get('served')}, expected {served}")
    res["upstream_calls"] = got
    return "ok" if not problems else "; ".join(problems)


def run_worker(specs: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """One fresh process measuring `specs` (one system)."""
    tag = re.sub(r"[^a-z0-9]+", "-", specs[0]["key"] + f"-r{specs[0]['rep']}" + ("-batch" if len(specs) > 1 else ""))
    spec_file, out, log = tmp / f"{tag}.json", tmp / f"{tag}.out.json", tmp / f"{tag}.log"
    for s in specs:
        s["out"] = str(out)
    spec_file.write_text(json.dumps(specs))
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO)}
    with log.open("wb") as err:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.compare_worker", str(spec_file)], cwd=REPO, env=env,
                              stdout=err, stderr=err, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker for {specs[0]['key']} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run_library(args: argparse.Namespace, tmp: Path, fakes: dict[int, Any]) -> list[dict[str, Any]]:
    """Every library variant, `reps` times, interleaved; one row per (variant, repetition)."""
    rows: list[dict[str, Any]] = []
    all_v = [v for v in variants() if "litellm" in args.systems or v["system"] != "litellm"]
    cells = list(dict.fromkeys(v["cell"] for v in all_v))
    for rep in range(args.reps):
        # alternate the order of cells and of systems within a cell between repetitions
        order = [v for c in (cells if rep % 2 == 0 else cells[::-1])
                 for v in ([x for x in all_v if x["cell"] == c][:: 1 if rep % 2 == 0 else -1])]
        groups: list[list[dict[str, Any]]] = []
        if args.quick:
            for system in dict.fromkeys(v["system"] for v in order):
                groups.append([prepare(v, rep, fakes, tmp, True) for v in order if v["system"] == system])
        else:
            groups = [[prepare(v, rep, fakes, tmp, False)] for v in order]
        for specs in groups:
            load1 = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = run_worker(specs, tmp)
            calls = {**fakes[0].stats()["calls"], **fakes[50].stats()["calls"]}
            for spec, res in zip(specs, out["results"], strict=True):
                res["check"] = check(spec, res, calls)
                rows.append({"spec": {k: spec[k] for k in ("key", "kind", "cell", "latency", "concurrency", "system",
                                                            "deployments", "log", "transport", "pause_ms", "rep", "n",
                                                            "warmup")},
                             "result": res, "process": {k: out[k] for k in out if k != "results"},
                             "load1_before": load1, "batch": len(specs) > 1})
            print(f"[rep {rep + 1}/{args.reps}] {specs[0]['key']}{' (+batch)' if len(specs) > 1 else ''}: "
                  f"{time.perf_counter() - t0:.1f}s, p50 {out['results'][0]['p50_ms']:.3f} ms, "
                  f"check {out['results'][0]['check']}", file=sys.stderr, flush=True)
    return rows


def run_services(args: argparse.Namespace, tmp: Path, fake: Any) -> list[dict[str, Any]]:
    """The fake itself, engine serve, the LiteLLM proxy and Portkey, `reps` times, alternating order."""
    spec = ({"seconds": 0.5, "connections": 8, "sequential": 30, "warmup": 5, "stream_sequential": 10} if args.quick
            else {"seconds": args.seconds, "connections": 32, "sequential": 1000, "warmup": 200,
                  "stream_sequential": 300})
    rows: list[dict[str, Any]] = []
    for rep in range(args.reps):
        d = tmp / f"svc-r{rep}"
        d.mkdir(parents=True, exist_ok=True)
        targets = [svc.fake_target(fake.url, f"svc-direct-r{rep}"),
                   svc.engine_serve_target(fake.channel_url(f"svc-ours-r{rep}"), d),
                   svc.engine_serve_target(fake.channel_url(f"svc-ours-sdk-r{rep}"), d, "sdk"),
                   svc.engine_serve_target(fake.channel_url(f"svc-ours-cache-r{rep}"), d, cache=True)]
        if "litellm" in args.systems:
            targets.append(svc.litellm_proxy_target(fake.channel_url(f"svc-lite-r{rep}"), d, args.litellm_proxy_python))
        targets.append(svc.portkey_target(fake.channel_url(f"svc-portkey-r{rep}"), args.portkey_dir))
        for t in (targets if rep % 2 == 0 else [targets[0]] + targets[:0:-1]):
            if t.missing:
                rows.append({"target": t.name, "rep": rep, "missing": t.missing})
                continue
            before = fake.stats()["calls"].get(t.channel, 0) if t.channel else 0
            res = svc.measure(t, spec, d)
            bad = {k: v for k, v in res["statuses"].items() if k != "200"}
            problem = f"non-200 answers: {bad}" if bad else ""
            if t.channel:  # cache hits: one call for the first request, plus the streams (never cached)
                res["upstream_calls"] = fake.stats()["calls"].get(t.channel, 0) - before
                want = 1 + min(spec["stream_sequential"], spec["warmup"]) + spec["stream_sequential"]
                if res["upstream_calls"] != want:
                    problem += f"{'; ' if problem else ''}{res['upstream_calls']} upstream calls, expected {want}"
            rows.append({"target": t.name, "rep": rep, "version": t.version, "result": res,
                         "check": problem or "ok"})
            print(f"[rep {rep + 1}/{args.reps}] service {t.name}: {res['rps']:.0f} req/s, "
                  f"p50@1c {res['p50_1c']:.3f} ms, first chunk {res['ttfc_p50_1c']:.3f} ms", file=sys.stderr,
                  flush=True)
    return rows


def run_profiles(args: argparse.Namespace, tmp: Path, fakes: dict[int, Any]) -> None:
    """Our Router's variants again, under pyinstrument: one text profile per variant in `args.profile`."""
    args.profile.mkdir(parents=True, exist_ok=True)
    wanted = ("library/0ms/c1/ours/d1", "library/0ms/c1/ours/d2", "library/0ms/c1/ours/d1/nolog",
              "library/0ms/c32/ours/d1", "failure/0ms/c1/ours/d2", "cache/0ms/c1/ours/d1", "machinery/0ms/c1/ours/d1")
    for v in (v for v in variants() if v["key"] in wanted):
        spec = prepare(v, 99, fakes, tmp, args.quick)
        spec["profile"] = str(args.profile / (re.sub(r"[^a-z0-9]+", "-", v["key"]) + ".txt"))
        run_worker([spec], tmp)
        print(f"profile of {v['key']}: {spec['profile']}", file=sys.stderr, flush=True)


def versions(args: argparse.Namespace) -> dict[str, str]:
    """Versions of everything measured."""
    out = {"python": sys.version.split()[0]}
    for dist in ("openai", "httpx", "pydantic", "litellm", "uvicorn", "uvloop", "aiohttp"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main(argv: list[str] | None = None) -> None:
    """Run everything, print the tables, write the RESULTS.md section."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=None, help="runs of every variant (default 2; 1 with --quick)")
    ap.add_argument("--seconds", type=float, default=5.0, help="service load at 32 connections, per run")
    ap.add_argument("--quick", action="store_true", help="tiny counts, one process per system; RESULTS.md untouched")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--no-service", action="store_true", help="skip the service part")
    ap.add_argument("--json", type=Path, help="also dump every raw number to this file")
    ap.add_argument("--profile", type=Path, help="only profile our Router's variants (pyinstrument) into this folder")
    ap.add_argument("--litellm-proxy-python", default=os.environ.get("LITELLM_PROXY_PYTHON", sys.executable),
                    help="interpreter that has litellm[proxy] [env LITELLM_PROXY_PYTHON; default: this one]")
    ap.add_argument("--portkey-dir", default=os.environ.get("PORTKEY_GATEWAY_DIR"),
                    help="folder where `npm install @portkey-ai/gateway` was run [env PORTKEY_GATEWAY_DIR]")
    ap.add_argument("--no-litellm", action="store_true", help="measure only the raw SDK and ours")
    args = ap.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 2)
    try:
        metadata.version("litellm")
        args.systems = ("raw", "ours") if args.no_litellm else ("raw", "ours", "litellm")
    except metadata.PackageNotFoundError:
        args.systems = ("raw", "ours")
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with tempfile.TemporaryDirectory(prefix="compare-") as td, spawn_fake(latency_ms=0) as f0, \
            spawn_fake(latency_ms=50) as f50:
        tmp = Path(td)
        if args.profile:
            run_profiles(args, tmp, {0: f0, 50: f50})
            return
        library = run_library(args, tmp, {0: f0, 50: f50})
        services = [] if args.no_service else run_services(args, tmp, f0)
    info = {"machine": machine(), "cores": os.cpu_count(), "platform": platform.platform(), "started": started,
            "load_start": load_start, "load_end": os.getloadavg(), "versions": versions(args), "reps": args.reps,
            "quick": args.quick, "command": " ".join(
                [f"{k}={os.environ[k]}" for k in ("LITELLM_PROXY_PYTHON", "PORTKEY_GATEWAY_DIR") if k in os.environ]
                + ["python -m benchmarks.compare", *(argv or sys.argv[1:])]),
            "litellm_missing": "litellm" not in args.systems, "service_skipped": args.no_service,
            "numpy_installed": importlib.util.find_spec("numpy") is not None}
    text = render(info, library, services)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "library": library, "services": services}, indent=1))
    if not args.quick and not args.no_write:
        write_section("compare", text)


if __name__ == "__main__":
    main()
