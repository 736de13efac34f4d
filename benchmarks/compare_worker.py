"""One fresh process of `benchmarks/compare.py`: measure one system (or, with --quick, a batch of variants).

    python -m benchmarks.compare_worker SPEC.json

The spec names the system (`raw` openai SDK, `ours` Router, `litellm` Router), what to measure and
the fake's URLs; the result goes to `spec["out"]` as JSON (stdout is left to the libraries, which
print). Only the standard library is imported before the system under test, so the import time and
the RSS after import are the system's own. A guard refuses every connection and name lookup that is
not loopback: the run is offline by construction, and what it refused is reported.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark, please."}]
MAX_TOKENS = 50
OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true", "LITELLM_LOG": "ERROR",
               "LITELLM_TELEMETRY": "False", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}

Call = Callable[[], Awaitable[str]]
FIRST_CHUNK_MS: list[float] = []
"""Kind `stream`: each call's time from sending to its first content chunk (the call itself reads
the whole stream, so connections are reused as an app's would be)."""


def install_net_guard(blocked: list[str]) -> None:
    """Refuse (and record) any connect or lookup that leaves the machine; Unix sockets pass."""

    def loopback(host: object) -> bool:
        if host is None:
            return True
        h = host.decode() if isinstance(host, bytes) else str(host)
        return h in _LOOPBACK_NAMES or h.startswith("127.") or h == "0.0.0.0"

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            addr = args[1]
            if isinstance(addr, tuple) and addr and not loopback(addr[0]):
                refuse(f"connect {addr[0]}:{addr[1]}")
        elif event == "socket.getaddrinfo" and not loopback(args[0]):
            refuse(f"lookup {args[0]!r}")

    def refuse(what: str) -> None:
        blocked.append(what)
        print(f"benchmark net guard: refused {what}", file=sys.stderr, flush=True)
        raise OSError(101, f"benchmark net guard: refused {what} (only loopback is allowed)")

    sys.addaudithook(hook)


def rss_kb() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB."""
    text = Path("/proc/self/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+)", text)
    hwm = re.search(r"VmHWM:\s+(\d+)", text)
    return (int(rss.group(1)) if rss else 0, int(hwm.group(1)) if hwm else 0)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


# -- the three systems ------------------------------------------------------------------------

def import_system(system: str) -> None:
    """Import what an app using `system` imports (timed by the caller)."""
    if system == "raw":
        import openai  # noqa: F401
    elif system == "ours":
        from engine.policy.api import load_policy_text  # noqa: F401
        from engine.runtime.router import Router
    else:
        import litellm
        from litellm.router import Router  # noqa: F401

        litellm.telemetry = False
        litellm.suppress_debug_info = True  # no "Give Feedback" banner printed on every failed attempt


def ours_policy(spec: dict[str, Any], tmp: Path) -> str:
    """Our policy over the fake: one deployment, or a primary and a fallback, as the spec says."""
    two = spec["deployments"] == 2
    primary = spec["down_url"] if spec["kind"] == "failure" else spec["ok_url"]
    transport = f", options: {{transport: {spec['transport']}}}" if spec.get("transport") else ""
    lines = ["version: 1", "providers:",
             f'  main: {{adapter: openai, api_key: sk-bench, base_url: "{primary}", timeout_s: 30{transport}}}']
    if two:
        backup = spec["backup_url"]
        lines.append(f'  backup: {{adapter: openai, api_key: sk-bench, base_url: "{backup}", timeout_s: 30}}')
    lines.append("models:")
    for name, provider in (("m-main", "main"), ("m-backup", "backup"))[: 2 if two else 1]:
        lines.append(f"  {name}: {{provider: {provider}, id: gpt-4o-mini, price: {{input: 0.15, output: 0.6}}, "
                     "context_window: 128000}")
    lines.append("routes:")
    lines.append("  - {name: default, strategy: ordered, candidates: [m-main]" +
                 (", fallback: [m-backup]}" if two else "}"))
    lines.append("retry: {max_attempts: 1}")  # like LiteLLM's num_retries=0: a 500 falls back at once
    if spec["kind"] == "failure":
        lines.append("health: {min_requests: 1000000}")  # keep the failing model in the plan every time
    if spec["kind"] == "cache":
        lines.append('cache: {enabled: true, when: "temperature == 0"}')
    if spec.get("log", True):
        lines.append(f'log: {{sqlite: "{tmp / "decisions.db"}"}}')
    return "\n".join(lines) + "\n"


Built = tuple[Call, Callable[[], Awaitable[None]]]


async def build(spec: dict[str, Any], tmp: Path) -> Built:
    """(one request -> the deployment that answered, close) for the spec's system and kind."""
    builder = {"raw": _build_raw, "ours": _build_ours, "litellm": _build_litellm}[spec["system"]]
    return builder(spec, tmp)


def _build_raw(spec: dict[str, Any], tmp: Path) -> Built:
    import openai

    def client(url: str) -> Any:
        return openai.AsyncOpenAI(api_key="sk-bench", base_url=url, max_retries=0)

    failing = spec["kind"] == "failure"
    ok = client(spec["backup_url"] if failing else spec["ok_url"])
    down = client(spec["down_url"]) if failing else None
    extra = {"temperature": 0.0} if spec["kind"] == "cache" else {}

    async def stream() -> str:
        return await _first_chunk(lambda: ok.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True))

    async def call() -> str:
        if down is not None:  # the application's own fallback: one failed call, then the backup
            try:
                await down.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=MAX_TOKENS)
                raise AssertionError("the failing deployment answered")
            except openai.InternalServerError:
                pass
        r = await ok.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=MAX_TOKENS, **extra)
        assert r.choices[0].message.content
        return "backup" if down is not None else "primary"

    async def close() -> None:
        await ok.close()
        if down is not None:
            await down.close()

    return (stream if spec["kind"] == "stream" else call), close


def _build_ours(spec: dict[str, Any], tmp: Path) -> Built:
    from engine.policy.api import load_policy_text
    from engine.runtime.router import Router

    # `machinery`: the router's own work alone, over an in-process adapter that answers at once
    overrides = {"m-main": _instant_adapter()} if spec["kind"] == "machinery" else None
    router = Router(load_policy_text(ours_policy(spec, tmp), "bench.yaml", env={}), adapters=overrides)
    want_fallbacks = 1 if spec["kind"] == "failure" else 0
    kw: dict[str, Any] = {"temperature": 0.0} if spec["kind"] == "cache" else {}

    async def call() -> str:
        r = await router.generate(messages=MESSAGES, max_tokens=MAX_TOKENS, **kw)
        assert r.text and r.fallbacks == want_fallbacks, (r.model, r.fallbacks)
        return "backup" if r.model == "m-backup" else "primary"

    async def stream() -> str:
        t, first = time.perf_counter(), None
        async for delta in router.stream(messages=MESSAGES, max_tokens=MAX_TOKENS):
            if first is None and getattr(delta, "text", None):
                first = time.perf_counter() - t
        assert first is not None
        FIRST_CHUNK_MS.append(first * 1000)
        return "primary"

    return (stream if spec["kind"] == "stream" else call), router.aclose


def _instant_adapter() -> Any:
    """An adapter that answers at once, without I/O: what is left is the router's own work."""
    from adapters.base import LLMAdapter, Reply, Usage

    class Instant(LLMAdapter):
        kind = "instant"

        async def _complete(self, request: Any) -> Reply:
            return Reply("Hello, benchmark.", Usage("stop", 12, 4))

        async def _stream(self, request: Any) -> Any:
            yield Usage("stop", 12, 4)

        def _translate_error(self, exc: Exception) -> None:
            return None

    return Instant("main", "gpt-4o-mini")


def _build_litellm(spec: dict[str, Any], tmp: Path) -> Built:
    from litellm.router import Router as LiteRouter

    def dep(name: str, url: str) -> dict[str, Any]:
        params = {"model": "openai/gpt-4o-mini", "api_base": url, "api_key": "sk-bench", "max_retries": 0}
        if spec["kind"] == "machinery":  # LiteLLM's own mock: the router and litellm.acompletion, no SDK call
            params["mock_response"] = "Hello, benchmark."
        return {"model_name": name, "litellm_params": params}

    kind = spec["kind"]
    deployments = [dep("primary", spec["down_url"] if kind == "failure" else spec["ok_url"])]
    options: dict[str, Any] = {"num_retries": 0}
    if spec["deployments"] == 2:
        deployments.append(dep("backup", spec["backup_url"]))
        options["fallbacks"] = [{"primary": ["backup"]}]
    if kind == "failure":
        options["disable_cooldowns"] = True  # keep the failing deployment in play, as our health setting does
    if kind == "cache":
        options["cache_responses"] = True  # LiteLLM's in-memory cache
    lite = LiteRouter(model_list=deployments, **options)
    kw: dict[str, Any] = {"temperature": 0.0} if kind == "cache" else {}

    async def call() -> str:
        r = await lite.acompletion(model="primary", messages=MESSAGES, max_tokens=MAX_TOKENS, **kw)
        assert r.choices[0].message.content
        return str((r._hidden_params.get("additional_headers") or {}).get("x-litellm-model-group", "primary"))

    async def stream() -> str:
        return await _first_chunk(lambda: lite.acompletion(
            model="primary", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True))

    async def close() -> None:
        return None

    return (stream if kind == "stream" else call), close


async def _first_chunk(open_stream: Callable[[], Awaitable[Any]]) -> str:
    """Read one OpenAI-shaped chunk stream (the SDK's or LiteLLM's) whole, timing its first content chunk."""
    t, first = time.perf_counter(), None
    async for chunk in await open_stream():
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t
    assert first is not None
    FIRST_CHUNK_MS.append(first * 1000)
    return "primary"


# -- measurement ------------------------------------------------------------------------------

async def drive(call: Call, n: int, concurrency: int, pause_s: float = 0.0) -> dict[str, Any]:
    """`n` requests from `concurrency` tasks, each task idle `pause_s` after each of its requests:
    per-request wall ms (the pause not included), req/s, process CPU ms per request (pause included)."""
    lat: list[float] = []
    served: dict[str, int] = {}
    todo = iter(range(n))

    async def one() -> None:
        for _ in todo:  # one shared iterator: the tasks split the n requests between them
            t = time.perf_counter()
            who = await call()
            lat.append((time.perf_counter() - t) * 1000)
            served[who] = served.get(who, 0) + 1
            if pause_s:
                await asyncio.sleep(pause_s)

    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"n": n, "concurrency": concurrency, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99),
            "mean_ms": statistics.fmean(lat), "rps": n / wall, "cpu_ms": cpu * 1000 / n, "served": served}


async def measure(spec: dict[str, Any], tmp: Path, cold: dict[str, float]) -> dict[str, Any]:
    """One variant: build, warm up, time; for `footprint`, RSS after the requests."""
    t0 = time.perf_counter()
    call, close = await build(spec, tmp)
    first = await call()
    cold.setdefault("first_answer_s", time.perf_counter() - t0)
    try:
        for _ in range(max(0, spec["warmup"] - 1)):
            await call()
        FIRST_CHUNK_MS.clear()
        pause_s = spec.get("pause_ms", 0) / 1000
        if spec.get("profile"):
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002, async_mode="enabled")
            profiler.start()
            res = await drive(call, spec["n"], spec["concurrency"], pause_s)
            profiler.stop()
            Path(spec["profile"]).write_text(profiler.output_text(unicode=False, color=False, show_all=True))
        else:
            res = await drive(call, spec["n"], spec["concurrency"], pause_s)
    finally:
        await close()
    res["first_served"] = first
    if spec["kind"] == "stream":
        res["ttfc_p50_ms"], res["ttfc_p99_ms"] = statistics.median(FIRST_CHUNK_MS), pct(FIRST_CHUNK_MS, 0.99)
    if spec["kind"] == "footprint":
        res["rss_after_kb"], res["hwm_after_kb"] = rss_kb()
    return res


def run(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Import the system once (timed), then measure each spec in turn."""
    os.environ.update(OFFLINE_ENV)
    blocked: list[str] = []
    install_net_guard(blocked)
    system = specs[0]["system"]
    assert all(s["system"] == system for s in specs), "one system per process"
    rss0, _ = rss_kb()
    t = time.perf_counter()
    import_system(system)
    import_s = time.perf_counter() - t
    rss_import, _ = rss_kb()
    cold: dict[str, float] = {}
    results = []
    for spec in specs:
        tmp = Path(spec["tmp"])
        tmp.mkdir(parents=True, exist_ok=True)
        results.append(asyncio.run(measure(spec, tmp, cold)))
    return {"system": system, "import_s": import_s, "rss_start_kb": rss0, "rss_import_kb": rss_import,
            "first_answer_s": import_s + cold["first_answer_s"], "results": results, "net_blocked": blocked,
            "load1": os.getloadavg()[0]}


# -- load generator for the services (HTTP/1.1, keep-alive) -------------------------------------

async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if m is not None:
        await reader.readexactly(int(m.group(1)))
    elif re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        raise RuntimeError(f"cannot frame the response: {head[:200]!r}")
    return status


async def _exchange_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes,
                           t: float) -> tuple[int, float]:
    """One streamed request: (status, ms from sending it to the first SSE `data:` bytes)."""
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    first = float("nan")
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if m is not None:  # not streamed at all (an error, or a server that buffers): the whole body is the first chunk
        await reader.readexactly(int(m.group(1)))
        # an error answer is no first chunk: timing it would credit a service for failing fast
        return status, (time.perf_counter() - t) * 1000 if status == 200 else float("nan")
    if not re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
        raise RuntimeError(f"cannot frame the response: {head[:200]!r}")
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if first != first and b"data:" in data:
            first = (time.perf_counter() - t) * 1000
        if size == 0:
            break
    return status, first


def _request(spec: dict[str, Any], body: dict[str, Any]) -> bytes:
    host, port = spec["host"], spec["port"]
    raw = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in spec["headers"].items())
    return (f"POST {spec['path']} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n{head}"
            f"content-length: {len(raw)}\r\n\r\n").encode() + raw


async def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Sequential requests on one connection, sequential streamed ones (time to first chunk), then
    `connections` concurrent ones for `seconds`."""
    host, port = spec["host"], spec["port"]
    req = _request(spec, spec["body"])
    stream_req = _request(spec, {**spec["body"], "stream": True})
    statuses: dict[int, int] = {}

    async def sequential(n: int) -> list[float]:
        reader, writer = await asyncio.open_connection(host, port)
        out = []
        for _ in range(n):
            t = time.perf_counter()
            status = await _exchange(reader, writer, req)
            out.append((time.perf_counter() - t) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()
        return out

    async def streamed(n: int) -> list[float]:
        reader, writer = await asyncio.open_connection(host, port)
        out = []
        for _ in range(n):
            status, first = await _exchange_stream(reader, writer, stream_req, time.perf_counter())
            out.append(first)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()
        return out

    await sequential(spec["warmup"])
    seq = await sequential(spec["sequential"])
    n_stream = spec.get("stream_sequential", 0)
    await streamed(min(n_stream, spec["warmup"]))
    ttfc = [x for x in await streamed(n_stream) if x == x]
    lat: list[float] = []
    stop = time.perf_counter() + spec["seconds"]

    async def conn() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            status = await _exchange(reader, writer, req)
            lat.append((time.perf_counter() - t) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(spec["connections"])))
    wall = time.perf_counter() - t0
    return {"p50_1c": statistics.median(seq), "p99_1c": pct(seq, 0.99), "rps": len(lat) / wall,
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "statuses": {str(k): v for k, v in statuses.items()},
            "requests": spec["warmup"] + spec["sequential"] + len(lat), "concurrent_s": wall,
            "ttfc_p50_1c": statistics.median(ttfc) if ttfc else float("nan"), "streamed": len(ttfc)}


def main() -> None:
    """Read the spec file, run it, write the result file."""
    specs = json.loads(Path(sys.argv[1]).read_text())
    specs = specs if isinstance(specs, list) else [specs]
    if specs[0]["kind"] == "load":
        try:
            import uvloop

            out = uvloop.run(load(specs[0]))
        except ImportError:
            out = asyncio.run(load(specs[0]))
    else:
        sys.path.insert(0, str(REPO))
        out = run(specs)
    Path(specs[0]["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
