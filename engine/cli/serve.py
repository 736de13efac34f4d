"""`engine serve`: the OpenAI-compatible HTTP service on uvicorn."""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
import os
import signal
import socket
import sys
from typing import Any

import click

from engine.cli.common import EXIT_INVALID, EXIT_USAGE, loaded_or_exit, policy_option, resolve_policy


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """uvicorn's logging config, with the engine's lines (and in JSON, uvicorn's too) in `fmt`."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    factory = "engine.server.logs.JsonFormatter" if fmt == "json" else "engine.server.logs.TextFormatter"
    cfg["formatters"]["engine"] = {"()": factory}
    if fmt == "json":
        cfg["formatters"]["default"] = {"()": factory}
    cfg["handlers"]["engine"] = {"formatter": "engine", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    cfg["loggers"]["engine"] = {"handlers": ["engine"], "level": level.upper(), "propagate": False}
    return cfg


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@click.command("serve")
@policy_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one; the URL is printed).")
@click.option("--workers", "-w", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes sharing the port.")
@click.option("--db", "--keys-db", "keys_db", type=click.Path(dir_okay=False), envvar="ENGINE_KEYS_DB",
              help="Client keys (`engine keys create --db FILE`); requests then need a key. [env: ENGINE_KEYS_DB]")
@click.option("--create", "create_keys", is_flag=True,
              help="Create the --db key store if it does not exist (else a missing file is refused).")
@click.option("--no-auth", is_flag=True, help="Serve without keys even on a non-loopback address.")
@click.option("--log-db", type=click.Path(dir_okay=False),
              help="Decision log file (default: the policy's log.sqlite, else <policy>.decisions.db beside the "
                   "policy, else ./decisions.db; the file is printed at start).")
@click.option("--no-log-db", is_flag=True, help="Keep no decision log (unless the policy's log.sqlite names one).")
@click.option("--max-body", "max_body", default=1 << 20, show_default=True, type=click.IntRange(1024),
              help="Largest request body in bytes (larger: 413).")
@click.option("--reload-interval", default=1.0, show_default=True, type=click.FloatRange(0),
              help="Seconds between checks of the policy file for changes (0: on SIGHUP only).")
@click.option("--grace", default=30.0, show_default=True, type=click.FloatRange(0),
              help="On SIGTERM/SIGINT, seconds in-flight requests get to finish.")
@click.option("--default-max-tokens", default=1000, show_default=True, type=click.IntRange(1),
              help="Output budget of requests that give none.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="Least severe line written: failed requests are error (5xx), warning (401/422/429) or "
                   "info (other 4xx); circuit openings warning; reloads info.")
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="Server log lines: readable text, or one JSON object per line (docs/service.md, 'Logs').")
@click.option("--otel", is_flag=True,
              help="Export OpenTelemetry traces over OTLP/HTTP (pip install 'llm-policy-router[otel]'; "
                   "OTEL_EXPORTER_OTLP_ENDPOINT says where, default http://localhost:4318).")
@click.option("--check", "check", is_flag=True,
              help="Probe every provider first (`engine doctor`); refuse to start when one fails.")
@click.option("--ready-check", "ready_check", default=0.0, type=click.FloatRange(0), metavar="SECONDS",
              help="Make /readyz require the provider probes too, re-run every SECONDS (0: off).")
def serve_cmd(policy: str | None, host: str, port: int, workers: int, keys_db: str | None, create_keys: bool,
              no_auth: bool, log_db: str | None, no_log_db: bool, max_body: int, reload_interval: float, grace: float,
              default_max_tokens: int, log_level: str, log_format: str, otel: bool, check: bool,
              ready_check: float) -> None:
    """Serve the policy as an OpenAI-compatible API.

    \b
    Endpoints: POST /v1/chat/completions (model "auto", a model or a route name; stream: true
    for SSE), GET /v1/models, POST /v1/explain, GET /healthz, /readyz, /metrics, /dashboard.

    \b
    Example:
      engine keys create --db keys.db --tenant acme --tier premium   # prints the key once
      engine serve --policy policies/default.yaml --db keys.db
      OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-rt-... python my_app.py

    The policy file is watched: a valid change is swapped in without dropping requests, an
    invalid one is refused (diagnostics logged) and the old policy keeps serving. SIGHUP
    reloads at once.
    """
    import uvicorn

    from engine.server.config import ServeConfig
    from engine.server.reload import load_checked

    path = resolve_policy(policy)
    loaded, _ = loaded_or_exit(path, load_checked)
    from engine.server.config import default_log_path

    if otel and not _installed("opentelemetry.exporter.otlp.proto.http"):
        click.echo("error: --otel needs OpenTelemetry: pip install 'llm-policy-router[otel]'", err=True)
        raise SystemExit(EXIT_USAGE)

    default_log = None if no_log_db else str(default_log_path(path))
    shown_log = log_db or loaded.log.sqlite or default_log
    if shown_log:
        click.echo(f"engine serve: decision log {shown_log} (engine stats --db {shown_log}; engine report --db "
                   f"{shown_log})", err=True)
    else:
        click.echo("engine serve: no decision log (--no-log-db)", err=True)
    if keys_db is not None:
        from engine.server.keystore import KeyStore

        try:
            KeyStore(keys_db, create=create_keys).close()
        except FileNotFoundError as e:
            click.echo(f"error: {e}", err=True)
            raise SystemExit(EXIT_USAGE) from None
    if check:
        from engine.cli.doctor import render_checks, run_checks

        checks = run_checks(str(path), 10.0)
        if any(c.status == "fail" for c in checks):
            render_checks(checks, title=f"engine serve --check: {path}")
            click.echo("error: refusing to serve: a provider failed its check (above); fix it, or start without "
                       "--check", err=True)
            raise SystemExit(EXIT_INVALID)
        from engine.ops.doctor import summary

        click.echo(f"engine serve --check: {summary(checks)}", err=True)
    if workers > 1:
        from engine.runtime.backends import unshared_limits

        unshared = unshared_limits(loaded, log_db=log_db)
        if unshared:
            click.echo(f"error: refusing --workers {workers} with state.backend 'embedded': each worker would count "
                       f"these on its own, letting through {workers}x each: {'; '.join(unshared)}. Share them with "
                       "`state: {backend: redis, url: redis://HOST:6379/0}` in the policy (docs/operations.md, "
                       "\"Running several instances\"), or serve with --workers 1.", err=True)
            raise SystemExit(EXIT_USAGE)
    if keys_db is None:
        if not no_auth and not _loopback(host):
            click.echo(f"error: refusing to serve {host} without client keys: give --db FILE (create keys with "
                       "`engine keys create`), or --no-auth to accept anyone.", err=True)
            raise SystemExit(EXIT_USAGE)
        click.echo("warning: no --db given: authentication is OFF, every request is tenant 'anonymous'.", err=True)
    config = ServeConfig(policy=str(path), keys_db=keys_db, log_db=log_db, default_log_db=default_log,
                         max_body_bytes=max_body,
                         reload_interval_s=reload_interval, default_max_tokens=default_max_tokens,
                         ready_check_s=ready_check, otel=otel)
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"engine serve: listening on http://{shown}:{sock.getsockname()[1]} (policy {path}, "
               f"{workers} worker{'s' if workers > 1 else ''})", err=True)
    common: dict[str, Any] = dict(loop="uvloop", http=_HTTP_PROTOCOL, ws="none", access_log=False,
                                  log_config=_log_config(log_level, log_format), log_level=log_level,
                                  timeout_graceful_shutdown=grace, server_header=False, lifespan="on")
    if workers == 1:
        from engine.server.app import create_app

        _tune_interpreter()
        server = uvicorn.Server(uvicorn.Config(create_app(config), **common))
        server.run(sockets=[sock])
        if not server.started:
            raise SystemExit(EXIT_INVALID)
        return
    os.environ.update(config.to_env())
    uv_config = uvicorn.Config("engine.cli.serve:worker_app", factory=True, workers=workers, **common)
    _supervisor(uv_config, [sock]).run()


# uvicorn's httptools protocol, writing a response's head together with its body (engine/server/framing.py)
_HTTP_PROTOCOL = "engine.server.framing:HttpToolsProtocol"
# Young objects are collected at this many net allocations instead of CPython's 700: a request
# allocates a few hundred short-lived containers, most freed by reference counting, and at 700 a
# collection (now and then a full one, over every object the imports made) ran every few
# requests: 5-8% of a worker's CPU under load, and 50 ms pauses. At 10,000 hardly any run.
_GC_YOUNG_THRESHOLD = 10_000


# The decision log's writer thread runs Python (row encoding) between its SQLite calls; when the
# event loop wants the GIL back it waits up to the switch interval before CPython makes the
# writer yield: 5 ms by default, which the loop paid several times a second under load. At 1 ms
# the wait is shorter and a worker serves ~1.5% more requests (benchmarks.compare's serve load,
# three interleaved pairs); CPU-bound threads switch more often, which a server does not have.
_SWITCH_INTERVAL_S = 0.001


def _tune_interpreter() -> None:
    """Set the garbage collector (`_GC_YOUNG_THRESHOLD`) and the GIL switch interval
    (`_SWITCH_INTERVAL_S`) of a serving process; a higher GC setting or a shorter interval is kept."""
    import gc

    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(young, _GC_YOUNG_THRESHOLD), older, oldest)
    sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))


def worker_app() -> Any:
    """The app of one worker of `engine serve --workers N` (uvicorn factory; config from `ENGINE_SERVE_*`)."""
    from engine.server.app import create_app

    _tune_interpreter()
    return create_app()


def _supervisor_class() -> Any:
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's worker supervisor, except that SIGHUP reloads the policy in every worker
        (each swaps it in place, keeping its cache, health and in-flight requests) instead of
        restarting the processes."""

        def handle_hup(self) -> None:
            for process in self.processes:
                pid = process.pid
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        continue

    return Supervisor


def _supervisor(config: Any, sockets: list[socket.socket]) -> Any:
    return _supervisor_class()(config, sockets=sockets)
