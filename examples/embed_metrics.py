"""An app that embeds the router and exposes Prometheus metrics on /metrics.

Run it (offline, on the bundled policy's simulated providers):

    pip install uvicorn
    python examples/embed_metrics.py            # http://127.0.0.1:8000
    curl -s localhost:8000/generate -d '{"prompt": "What is 2+2?", "meta": {"tenant": "acme"}}'
    curl -s localhost:8000/metrics | grep llm_router_requests_total

POST /generate routes one prompt; POST /feedback records a score for an earlier answer;
GET /metrics is the Prometheus scrape endpoint (its gauges are refreshed from the router at each
scrape). Point Prometheus at it and import `examples/grafana-dashboard.json` into Grafana.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine import EngineError, Policy, RequestError, Router, load_policy
from engine.ops.metrics import RouterMetrics
from engine.policy.bundled import default_policy_path


def create_app(policy: Policy | None = None, **router_kwargs: Any) -> Starlette:
    """The app: one router, its metrics, three endpoints.

    Args:
        policy: the routing policy (default: $ENGINE_POLICY, else the bundled offline policy).
        router_kwargs: passed to `Router` (e.g. `log_path`, `adapters`).
    """
    if policy is None:
        policy = load_policy(os.environ.get("ENGINE_POLICY") or default_policy_path())
    # a tenant label only if the policy allows it: tenants are an unbounded set of series
    metrics = RouterMetrics(tenant_label=policy.metrics_tenant_label)
    router_kwargs.setdefault("log_path", None)
    router = Router(policy, metrics=metrics, **router_kwargs)
    metrics.bind(router)

    async def generate(request: Request) -> Response:
        body = await request.json()
        try:
            result = await router.generate(body.get("prompt"), max_tokens=int(body.get("max_tokens", 500)),
                                           temperature=float(body.get("temperature", 0.7)),
                                           meta=body.get("meta") or {})
        except RequestError as e:
            return JSONResponse({"error": type(e).__name__, "message": str(e)}, status_code=400)
        except EngineError as e:  # refused, over quota, every model failed: all logged and counted
            return JSONResponse({"error": type(e).__name__, "message": str(e)}, status_code=503)
        return JSONResponse({"text": result.text, "model": result.model, "route": result.route,
                             "cost_usd": result.cost_usd, "cached": result.cached,
                             "request_id": result.request_id})

    async def feedback(request: Request) -> Response:
        body = await request.json()
        try:
            router.feedback(str(body["request_id"]), body.get("score"), body.get("label"))
        except RuntimeError as e:  # no decision log configured
            return JSONResponse({"error": str(e)}, status_code=409)
        return JSONResponse({"ok": True})

    async def scrape(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await router.aclose()

    app = Starlette(routes=[Route("/generate", generate, methods=["POST"]),
                            Route("/feedback", feedback, methods=["POST"]),
                            Route("/metrics", scrape, methods=["GET"])], lifespan=lifespan)
    app.state.router = router
    app.state.metrics = metrics
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
