"""The service half of `benchmarks/compare.py`: `engine serve`, the LiteLLM proxy and the Portkey
gateway, one worker each, in front of the same fake upstream, driven by one load generator.

Each service runs in its own process; the load generator (`compare_worker`, kind `load`) runs in
another. The service's CPU time is read from /proc before and after the load, so throughput can be
given per CPU-second of the service (a per-core figure on a machine whose cores are shared with the
upstream and the load generator).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.compare_worker import MAX_TOKENS, MESSAGES, OFFLINE_ENV, REPO

MASTER_KEY = "sk-bench-master-0123456789abcdef0123456789abcdef"
_GUARD = ("import sys; sys.path.insert(0, {repo!r}); from benchmarks.compare_worker import install_net_guard; "
          "install_net_guard([]); sys.argv = ['litellm'] + sys.argv[1:]; "
          "from litellm.proxy.proxy_cli import run_server; run_server()")


@dataclass
class Target:
    """One service to load: how to start it and what to send it."""

    name: str
    cmd: list[str] | None  # None: already running (the fake itself)
    url: str
    headers: dict[str, str]
    model: str
    env: dict[str, str] = field(default_factory=dict)
    version: str = ""
    missing: str = ""  # why it is not measured, when it is not
    path: str = "/v1/chat/completions"
    body: dict[str, Any] = field(default_factory=dict)  # added to every request's body
    channel: str = ""  # the fake's channel whose calls are checked (cache hits)


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def engine_serve_target(upstream: str, tmp: Path, transport: str | None = None, cache: bool = False) -> Target:
    """`engine serve` (one worker, decision log on, no client keys) over the fake: its default
    transport, or the one named (`sdk`: the official openai SDK; `http`: the lean client). With
    `cache`, the policy caches `temperature == 0` and every request says temperature 0: after the
    first, each non-streamed request is an exact hit."""
    import importlib.util

    port = free_port()
    if importlib.util.find_spec("engine.cli.serve") is None:
        return Target("engine serve", None, "", {}, "auto", missing="not measured: engine serve missing")
    name = "engine serve" if transport is None else f"engine serve (transport: {transport})"
    if cache:
        name = "engine serve (cache hit)"
    options = "" if transport is None else f", options: {{transport: {transport}}}"
    tag = (transport or "default") + ("-cache" if cache else "")
    policy = tmp / f"serve-{tag}.yaml"
    policy.write_text(
        "version: 1\nproviders:\n"
        f'  up: {{adapter: openai, api_key: sk-bench, base_url: "{upstream}", timeout_s: 30{options}}}\n'
        "models:\n  gpt-mini: {provider: up, id: gpt-4o-mini, price: {input: 0.15, output: 0.6}, "
        "context_window: 128000}\n"
        "routes:\n  - {name: default, strategy: ordered}\nretry: {max_attempts: 1}\n"
        + ('cache: {enabled: true, when: "temperature == 0"}\n' if cache else "")
        + f'log: {{sqlite: "{tmp / f"serve-{tag}.db"}"}}\n')
    cmd = [sys.executable, "-c", "from engine.cli import main; main()", "serve", "--policy", str(policy),
           "--port", str(port), "--log-level", "warning", "--reload-interval", "0"]
    return Target(name, cmd, f"http://127.0.0.1:{port}", {}, "auto", version=_our_version(),
                  body={"temperature": 0} if cache else {},
                  channel=upstream.rstrip("/").rsplit("/", 2)[-2] if cache else "")


def litellm_proxy_target(upstream: str, tmp: Path, python: str) -> Target:
    """The LiteLLM proxy (one uvicorn worker, master key, no database) over the fake."""
    version = _run([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
    probe = _run([python, "-c", "import litellm.proxy.proxy_server"], env={**os.environ, **OFFLINE_ENV})
    if not version or probe is None:
        return Target("LiteLLM proxy", None, "", {}, "gpt-mini",
                      missing=f"not measured: the LiteLLM proxy is not importable by {python} "
                              "(pip install 'litellm[proxy]'; set LITELLM_PROXY_PYTHON)")
    port = free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(json.dumps({
        "model_list": [{"model_name": "gpt-mini", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_base": upstream, "api_key": "sk-bench", "max_retries": 0}}],
        "litellm_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True},
    }))
    cmd = [python, "-c", _GUARD.format(repo=str(REPO)), "--config", str(cfg), "--host", "127.0.0.1",
           "--port", str(port), "--num_workers", "1"]
    return Target("LiteLLM proxy", cmd, f"http://127.0.0.1:{port}", {"authorization": f"Bearer {MASTER_KEY}"},
                  "gpt-mini", env=dict(OFFLINE_ENV), version=f"litellm[proxy] {version}")


def portkey_target(upstream: str, gateway_dir: str | None) -> Target:
    """The Portkey gateway (node, one process) forwarding to the fake as a custom OpenAI host."""
    node = shutil.which("node")
    script = Path(gateway_dir or "") / "node_modules/@portkey-ai/gateway/build/start-server.js"
    if not gateway_dir or node is None or not script.exists():
        return Target("Portkey gateway", None, "", {}, "gpt-4o-mini",
                      missing="not measured: Portkey gateway not installed (npm install @portkey-ai/gateway in a "
                              "folder, then --portkey-dir FOLDER or PORTKEY_GATEWAY_DIR)")
    pkg = json.loads((script.parents[1] / "package.json").read_text())
    port = free_port()
    headers = {"authorization": "Bearer sk-bench", "x-portkey-provider": "openai", "x-portkey-custom-host": upstream}
    return Target("Portkey gateway", [node, str(script), f"--port={port}", "--headless"], f"http://127.0.0.1:{port}",
                  headers, "gpt-4o-mini", env={"NODE_ENV": "production"},
                  version=f"@portkey-ai/gateway {pkg['version']}, node {_run([node, '--version']) or '?'}")


def fake_target(url: str, channel: str) -> Target:
    """The fake upstream itself (on its own channel), as the floor."""
    return Target("fake upstream, direct", None, url.rstrip("/"), {"authorization": "Bearer sk-bench"},
                  "gpt-4o-mini", version="tests/fakes", path=f"/{channel}/v1/chat/completions")


def _our_version() -> str:
    try:
        import importlib.metadata as md

        return f"llm-policy-router {md.version('llm-policy-router')}"
    except Exception:
        return "llm-policy-router (source tree)"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _post(target: Target, timeout: float = 5.0) -> int:
    body = json.dumps({"model": target.model, "messages": MESSAGES, "max_tokens": MAX_TOKENS, **target.body}).encode()
    req = urllib.request.Request(target.url + target.path, data=body, method="POST",
                                 headers={"content-type": "application/json", **target.headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(d.name)] = int(fields[1])
            cpu[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    return sum(cpu.get(p, 0.0) for p in tree)


def tree_rss_kb(pid: int) -> int:
    """RSS of `pid` (KiB)."""
    m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) if m else 0


@contextlib.contextmanager
def running(target: Target, log: Path, startup_timeout: float = 180.0) -> Iterator[tuple[int | None, float]]:
    """Start the target (if it has a command); yield (pid, seconds to its first 200) once it answers."""
    if target.cmd is None:
        yield None, 0.0
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           **target.env}
    with log.open("ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(target.cmd, cwd=tempfile.gettempdir(), env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
        try:
            while _post(target) != 200:
                if proc.poll() is not None or time.perf_counter() - t0 > startup_timeout:
                    raise RuntimeError(f"{target.name} did not start; see {log}")
                time.sleep(0.2)
            yield proc.pid, time.perf_counter() - t0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(target: Target, spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Start the target, load it from a fresh process, and read its CPU and RSS."""
    log = tmp / f"{re.sub(r'[^a-z]+', '-', target.name.lower())}.log"
    with running(target, log) as (pid, startup_s):
        host, port = target.url.removeprefix("http://").split(":")
        out = tmp / "load.json"
        load = {**spec, "kind": "load", "host": host, "port": int(port), "path": target.path,
                "headers": target.headers, "out": str(out),
                "body": {"model": target.model, "messages": MESSAGES, "max_tokens": MAX_TOKENS, **target.body}}
        (tmp / "load-spec.json").write_text(json.dumps(load))
        cpu0 = tree_cpu_s(pid) if pid else 0.0
        subprocess.run([sys.executable, "-m", "benchmarks.compare_worker", str(tmp / "load-spec.json")], cwd=REPO,
                       check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        result: dict[str, Any] = json.loads(out.read_text())
        if pid:
            cpu = tree_cpu_s(pid) - cpu0
            result.update(startup_s=startup_s, cpu_s=cpu, cpu_ms_per_req=cpu * 1000 / result["requests"],
                          rss_kb=tree_rss_kb(pid))
    text = log.read_text(errors="replace") if log.exists() else ""
    result["net_blocked"] = text.count("benchmark net guard: refused")
    result["load1"] = os.getloadavg()[0]
    return result
