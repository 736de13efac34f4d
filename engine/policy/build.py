"""Schema-valid policy data -> `Policy` (frozen dataclasses).

Runs only after the schema passed, so shapes are trusted here; references between parts
are checked later by `check`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.policy.model import (
    CacheConfig,
    CircuitThresholds,
    DemoteThresholds,
    HealthConfig,
    LatencyPrior,
    Limits,
    LogConfig,
    Model,
    Policy,
    Price,
    Provider,
    QueryTypeRule,
    Quota,
    QuotaLimit,
    Require,
    RetryConfig,
    Route,
    Signal,
)

_SIM_OPTIONS = ("latency_ms", "failure_rate", "seed", "time_scale")


def _limits(d: dict[str, Any] | None) -> Limits:
    d = d or {}
    return Limits(rpm=d.get("rpm"), tpm=d.get("tpm"), concurrency=d.get("concurrency"))


def build_policy(data: dict[str, Any], *, source: str = "<policy>", digest: str = "") -> Policy:
    """Build the immutable policy from schema-valid `data`."""
    providers = {
        name: Provider(
            name=name, adapter=p["adapter"], api_key=p.get("api_key"), base_url=p.get("base_url"),
            timeout_s=float(p.get("timeout_s", 30.0)), limits=_limits(p.get("limits")),
            options={**{k: p[k] for k in _SIM_OPTIONS if k in p}, **(p.get("options") or {})},
        )
        for name, p in data["providers"].items()
    }
    models = {}
    for i, (name, m) in enumerate(data["models"].items()):
        lat = m.get("latency")
        price, window, window_source = _catalogued(m, name, providers)
        models[name] = Model(
            name=name, provider=m["provider"], id=m.get("id", name), price=price,
            context_window=window, context_window_source=window_source, max_output_tokens=m.get("max_output_tokens"),
            features=frozenset(m.get("features", ())), scores=tuple(m.get("scores", {}).items()),
            latency=LatencyPrior(p50_ms=float(lat["p50_ms"]), p95_ms=float(lat["p95_ms"])) if lat else None,
            limits=_limits(m.get("limits")), order=i,
        )
    signals = {
        name: Signal(name=name, regex=tuple(s.get("regex", ())), keywords=tuple(s.get("keywords", ())),
                     when=s.get("when"), classify=s.get("classify"))
        for name, s in (data.get("signals") or {}).items()
    }
    query_types = tuple(QueryTypeRule(type=q["type"], when=q.get("when"))
                        for q in (data.get("query_types") or [{"type": "chat"}]))
    routes = tuple(
        Route(
            name=r["name"], when=r.get("when"),
            candidates=tuple(r["candidates"]) if "candidates" in r else None,
            require=Require(score=r.get("require", {}).get("score"),
                            features=frozenset(r.get("require", {}).get("features", ())),
                            max_p95_ms=r.get("require", {}).get("max_p95_ms")),
            max_cost_usd=r.get("max_cost_usd"), strategy=r.get("strategy", "best"),
            fallback=tuple(r.get("fallback", ())), index=i,
        )
        for i, r in enumerate(data["routes"])
    )
    quotas = tuple(
        Quota(name=q["name"], scope=tuple(q.get("scope", ())), window=q["window"],
              limit=QuotaLimit(cost_usd=q["limit"].get("cost_usd"), tokens=q["limit"].get("tokens"),
                               requests=q["limit"].get("requests")),
              on_exceed=q.get("on_exceed", "reject"))
        for q in data.get("quotas") or ()
    )
    base = Path(source).parent if source and not source.startswith("<") else Path.cwd()
    c = data.get("cache") or {}
    log = data.get("log") or {}
    cache = CacheConfig(
        enabled=c.get("enabled", bool(c)), ttl_s=float(c.get("ttl_s", 3600)),
        max_entries=int(c.get("max_entries", 10_000)), scope=c.get("scope", "tenant"), when=c.get("when"),
        normalize=tuple(c.get("normalize", ("whitespace",))), backend=c.get("backend", "memory"),
        path=_relative(c.get("path"), base),
    )
    h = data.get("health") or {}
    oc, dm = h.get("open_circuit") or {}, h.get("demote") or {}
    health = HealthConfig(
        window_s=float(h.get("window_s", 60)), min_requests=int(h.get("min_requests", 20)),
        open_circuit=CircuitThresholds(error_rate=float(oc.get("error_rate", 0.5)),
                                       cooldown_s=float(oc.get("cooldown_s", 30))),
        demote=DemoteThresholds(error_rate=dm.get("error_rate", 0.2), p95_latency_ms=dm.get("p95_latency_ms")),
    )
    r = data.get("retry") or {}
    retry = RetryConfig(max_attempts=int(r.get("max_attempts", 2)), backoff_ms=float(r.get("backoff_ms", 200)),
                        max_backoff_ms=float(r.get("max_backoff_ms", 5000)))
    return Policy(
        version=data["version"], providers=providers, models=models, signals=signals,
        query_types=query_types, routes=routes, quotas=quotas, cache=cache, health=health, retry=retry,
        deadline_s=float(data.get("deadline_s", 60)),
        log=LogConfig(sqlite=_relative(log.get("sqlite"), base), prompts=log.get("prompts", "hash")),
        metrics_tenant_label=bool((data.get("metrics") or {}).get("tenant_label", False)),
        source=source, digest=digest,
    )


def _catalogued(m: dict[str, Any], name: str, providers: dict[str, Provider]) -> tuple[Price, int, str]:
    """The model's price and context window: the policy's, else the catalogue's (engine/policy/prices.py)."""
    raw_price, raw_window = m["price"], m.get("context_window")
    entry = None
    if raw_price == "auto" or raw_window is None:
        from engine.policy.prices import UNKNOWN, lookup

        p = providers.get(m["provider"])
        entry = lookup(m.get("id", name), p.adapter, p.options) if p is not None else None
    if raw_price == "auto":
        price = Price(input=entry.input, output=entry.output, source=entry.source) if entry else Price(
            input=0.0, output=0.0, source=UNKNOWN)
    else:
        price = Price(input=float(raw_price["input"]), output=float(raw_price["output"]))
    if raw_window is not None:
        return price, int(raw_window), "policy"
    if entry is not None and entry.context_window:
        return price, int(entry.context_window), entry.source
    return price, 0, UNKNOWN


def _relative(path: str | None, base: Path) -> str | None:
    """Log and cache files are relative to the policy file, like includes in any config."""
    if not path:
        return None  # `${ENGINE_LOG_DB:-}` with the variable unset means "not configured"
    if path == ":memory:":
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)
