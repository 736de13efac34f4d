"""Operations endpoints: `/healthz`, `/readyz`, `/metrics` and the live `/dashboard`.

These carry no client data beyond aggregates and need no key; expose them only where your
operators are (docs/service.md). The dashboard is a static page from this package's `static/`
folder plus plotly.js from the installed `plotly` package (never a CDN); it polls
`/dashboard/data` and redraws its charts.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from engine.server.auth import Authenticator
    from engine.server.livestats import LiveStats
    from engine.server.reload import PolicyHolder

__all__ = ["STATIC", "OpsPages", "plotly_js"]

STATIC = Path(__file__).with_name("static")
"""The dashboard's files."""

_STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def plotly_js() -> Path | None:
    """plotly.min.js: a copy vendored in `static/`, else the one inside the installed `plotly` package."""
    vendored = STATIC / "plotly.min.js"
    if vendored.is_file():
        return vendored
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


class OpsPages:
    """The ops endpoints of one service.

    It is handed the pieces it reads (policy holder, authenticator, live statistics) rather
    than the service itself, so the service module imports this one and not the reverse.
    """

    def __init__(self, holder: PolicyHolder, auth: Authenticator, stats: LiveStats) -> None:
        self.holder, self.auth, self.stats = holder, auth, stats
        self._plotly = plotly_js()
        self._report: tuple[float, str, bytes] | None = None  # (computed at, log path, JSON)
        self.require_checks = False
        """Whether readiness needs the latest provider probes (`engine serve --ready-check`) to pass."""
        self.checks: dict[str, Any] | None = None
        """The latest provider probes: ok, summary, at, failing (None: not run yet)."""
        self._report_lock = asyncio.Lock()

    def routes(self) -> Sequence[BaseRoute]:
        """Starlette routes of every ops endpoint."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/dashboard", self.dashboard, methods=["GET"]),
            Route("/dashboard/data", self.dashboard_data, methods=["GET"]),
            Route("/dashboard/report", self.dashboard_report, methods=["GET"]),
            Route("/dashboard/static/{name}", self.static, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    def readiness(self) -> dict[str, Any]:
        """What `/readyz` reports: the policy version, reload counters and each provider's circuits."""
        holder = self.holder
        live = holder.live
        if live is None:
            return {"ready": False, "reason": "no policy loaded"}
        router = live.router
        providers: dict[str, dict[str, str]] = {}
        for m in router.policy.models.values():
            providers.setdefault(m.provider, {})[m.name] = router.health.state(m.name)
        checks = self.checks
        ready = not self.require_checks or (checks is not None and bool(checks["ok"]))
        out: dict[str, Any] = {"ready": ready}
        if not ready:
            out["reason"] = "provider checks have not run yet" if checks is None else \
                f"provider checks failed: {checks['summary']}"
        return {
            **out,
            **({"checks": checks} if checks is not None else {}),
            "policy": {"version": live.version[:12], "digest": live.version, "source": router.policy.source,
                       "generation": live.generation, "loaded_at": live.loaded_at,
                       "reloads": holder.reloads, "rejected": holder.rejections, "last_error": holder.last_error},
            "auth": self.auth.enabled,
            "providers": {p: {"state": _worst(models.values()), "models": models} for p, models in providers.items()},
            # shared state (Redis): still ready while it is down, since the policy's state.on_failure
            # says how requests are answered meanwhile and every replica shares the same store
            "state": router.backend.status(),
        }

    async def readyz(self, request: Request) -> Response:
        """Readiness: 200 with the policy version and circuit states once a policy is live, else 503."""
        body = self.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text format."""
        metrics = self.stats.metrics
        live = self.holder.live
        if metrics is None:
            return Response("metrics are disabled\n", status_code=404, media_type="text/plain")
        if live is not None and hasattr(metrics, "refresh"):
            metrics.refresh(live.router)
        body = metrics.render()
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def dashboard(self, request: Request) -> Response:
        """The dashboard page."""
        return FileResponse(STATIC / "dashboard.html", media_type="text/html; charset=utf-8")

    async def dashboard_data(self, request: Request) -> Response:
        """Everything the dashboard draws, as JSON."""
        data = self.stats.snapshot()
        data["readiness"] = self.readiness()
        data["generated_at"] = time.time()
        return Response(json.dumps(data, default=str), media_type="application/json",
                        headers={"cache-control": "no-store"})

    async def dashboard_report(self, request: Request) -> Response:
        """`engine report`'s charts over the last hour of the decision log, as plotly figure JSON.

        Computed in a worker thread (it reads the log), at most once per `REPORT_EVERY_S`.
        """
        live = self.holder.live
        log = live.router.recorder.log if live is not None else None
        if live is None or log is None:
            return JSONResponse({"available": False, "reason": "no decision log: set log.sqlite in the policy or "
                                 "start with --log-db FILE"})
        path = str(log.path)
        async with self._report_lock:
            cached = self._report
            if cached is None or cached[1] != path or time.time() - cached[0] >= REPORT_EVERY_S:
                body = await asyncio.to_thread(report_figures, path, live.router.policy, time.time() - 3600)
                self._report = cached = (time.time(), path, body)
        return Response(cached[2], media_type="application/json", headers={"cache-control": "no-store"})

    async def static(self, request: Request) -> Response:
        """The dashboard's script, stylesheet and plotly.js."""
        name = request.path_params["name"]
        if name == "plotly.min.js":
            if self._plotly is None:
                return Response("plotly.js is not installed: pip install plotly\n", status_code=404,
                                media_type="text/plain")
            return FileResponse(self._plotly, media_type="text/javascript",
                                headers={"cache-control": "public, max-age=86400"})
        if name not in _STATIC_FILES:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return FileResponse(STATIC / name, media_type=_STATIC_FILES[name])


REPORT_EVERY_S = 5.0
"""How often the report's charts are recomputed from the decision log at most."""


def report_figures(path: str, policy: Any, since: float) -> bytes:
    """The charts of `engine report` (`engine.ops.report`) for a decision log, as JSON."""
    from engine.ops.logstats import collect
    from engine.ops.report import CHARTS
    from engine.ops.report import figures as report_charts
    from engine.ops.timeseries import series

    figures = report_charts(collect(path, since=since, by="model", policy=policy), series(path, since), policy)
    charts = [{"id": div_id, "title": title,
               "figure": json.loads(figures[div_id].to_json()) if div_id in figures else None}
              for div_id, title in CHARTS.items()]
    return json.dumps({"available": True, "since": since, "charts": charts}).encode()


def _worst(states: Any) -> str:
    states = set(states)
    for s in ("open", "half_open"):
        if s in states:
            return s
    return "closed"
