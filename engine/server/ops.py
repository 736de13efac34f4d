"""Operations endpoints: `/healthz`, `/readyz`, `/metrics` and the live `/dashboard`.

These carry no client data beyond aggregates and need no key; expose them only where your
operators are (docs/service.md). The dashboard is a static page from this package's `static/`
folder plus plotly.js from the installed `plotly` package (never a CDN); it polls
`/dashboard/data` and redraws its charts.
"""

from __future__ import annotations

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
    from engine.server.app import Service

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
    """The ops endpoints of one service."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._plotly = plotly_js()

    def routes(self) -> Sequence[BaseRoute]:
        """Starlette routes of every ops endpoint."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/dashboard", self.dashboard, methods=["GET"]),
            Route("/dashboard/data", self.dashboard_data, methods=["GET"]),
            Route("/dashboard/static/{name}", self.static, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    def readiness(self) -> dict[str, Any]:
        """What `/readyz` reports: the policy version, reload counters and each provider's circuits."""
        holder = self.service.holder
        live = holder.live
        if live is None:
            return {"ready": False, "reason": "no policy loaded"}
        router = live.router
        providers: dict[str, dict[str, str]] = {}
        for m in router.policy.models.values():
            providers.setdefault(m.provider, {})[m.name] = router.health.state(m.name)
        return {
            "ready": True,
            "policy": {"version": live.version[:12], "digest": live.version, "source": router.policy.source,
                       "generation": live.generation, "loaded_at": live.loaded_at,
                       "reloads": holder.reloads, "rejected": holder.rejections, "last_error": holder.last_error},
            "auth": self.service.auth.enabled,
            "providers": {p: {"state": _worst(models.values()), "models": models} for p, models in providers.items()},
        }

    async def readyz(self, request: Request) -> Response:
        """Readiness: 200 with the policy version and circuit states once a policy is live, else 503."""
        body = self.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text format."""
        metrics = self.service.stats.metrics
        live = self.service.holder.live
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
        data = self.service.stats.snapshot()
        data["readiness"] = self.readiness()
        data["generated_at"] = time.time()
        return Response(json.dumps(data, default=str), media_type="application/json",
                        headers={"cache-control": "no-store"})

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


def _worst(states: Any) -> str:
    states = set(states)
    for s in ("open", "half_open"):
        if s in states:
            return s
    return "closed"
