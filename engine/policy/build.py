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
    Group,
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
    ScopedLimit,
    SemanticCacheConfig,
    Signal,
    StateConfig,
    StateFailure,
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
            features=frozenset(m.get("features", ())), features_declared="features" in m,
            scores=tuple(m.get("scores", {}).items()),
            latency=LatencyPrior(p50_ms=float(lat["p50_ms"]), p95_ms=float(lat["p95_ms"])) if lat else None,
            limits=_limits(m.get("limits")), order=i,
            tokenizer=_tokenizer(m, name, providers),
        )
    signals = {
        name: Signal(name=name, regex=tuple(s.get("regex", ())), keywords=tuple(s.get("keywords", ())),
                     when=s.get("when"), classify=s.get("classify"),
                     similar_to=tuple((s.get("similar_to") or {}).get("examples", ())),
                     similar_threshold=float((s.get("similar_to") or {}).get("threshold", 0.7)))
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
            fallback=tuple(r.get("fallback", ())),
            downgrade_to=tuple(r["downgrade_to"]) if "downgrade_to" in r else None, index=i,
        )
        for i, r in enumerate(data["routes"])
    )
    quotas = tuple(
        Quota(name=q["name"], scope=tuple(q.get("scope", ())), window=q["window"], limit=_quota_limit(q["limit"]),
              on_exceed=q.get("on_exceed", "reject"), when=q.get("when"))
        for q in data.get("quotas") or ()
    )
    groups = {
        name: Group(name=name, models=tuple(g["models"]), strategy=g.get("strategy", "weighted"),
                    weights=tuple((str(k), float(v)) for k, v in (g.get("weights") or {}).items()))
        for name, g in (data.get("groups") or {}).items()
    }
    base = Path(source).parent if source and not source.startswith("<") else Path.cwd()
    c = data.get("cache") or {}
    log = data.get("log") or {}
    cache = CacheConfig(
        enabled=c.get("enabled", bool(c)), ttl_s=float(c.get("ttl_s", 3600)),
        max_entries=int(c.get("max_entries", 10_000)), scope=c.get("scope", "tenant"), when=c.get("when"),
        normalize=tuple(c.get("normalize", ("whitespace",))), backend=c.get("backend", "memory"),
        path=_relative(c.get("path"), base), semantic=_semantic(c.get("semantic")),
        seeded=bool(c.get("seeded", False)),
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
    st = data.get("state") or {}
    fail = st.get("on_failure") or {}
    state = StateConfig(
        backend=st.get("backend", "embedded"), url=st.get("url") or None, prefix=st.get("prefix", "engine:"),
        timeout_ms=float(st.get("timeout_ms", 500)), retry_s=float(st.get("retry_s", 1)),
        reservation_ttl_s=float(st["reservation_ttl_s"]) if "reservation_ttl_s" in st else None,
        on_failure=StateFailure(quotas=fail.get("quotas", "reject"), limits=fail.get("limits", "local")),
    )
    scoped = tuple(ScopedLimit(name=x["name"], scope=tuple(x["scope"]), rpm=x.get("rpm"), tpm=x.get("tpm"))
                   for x in data.get("limits") or ())
    return Policy(
        version=data["version"], providers=providers, models=models, signals=signals,
        query_types=query_types, routes=routes, quotas=quotas, groups=groups, cache=cache, health=health, retry=retry,
        deadline_s=float(data.get("deadline_s", 60)),
        log=LogConfig(sqlite=_relative(log.get("sqlite"), base), prompts=log.get("prompts", "hash")),
        state=state, limits=scoped,
        metrics_tenant_label=bool((data.get("metrics") or {}).get("tenant_label", False)),
        source=source, digest=digest,
    )


def _semantic(s: Any) -> SemanticCacheConfig | None:
    """`cache.semantic`: `true` means the calibrated defaults; an object overrides them."""
    if not s:
        return None
    if s is True:
        return SemanticCacheConfig()
    if not s.get("enabled", True):
        return None
    emb = s.get("embedder", "bundled")
    name, model, dim = (emb, None, None) if isinstance(emb, str) else (
        f"provider:{emb['provider']}", emb["model"], emb.get("dimension"))
    default = SemanticCacheConfig()
    threshold = float(s.get("threshold", default.threshold))
    qts = tuple((qt, None if v is False else float(v.get("threshold", threshold)))
                for qt, v in (s.get("query_types") or {}).items())
    idx = s.get("index") or {}
    return SemanticCacheConfig(
        embedder=name, embedder_model=model, embedder_dimension=dim, threshold=threshold, query_types=qts,
        top_k=int(s.get("top_k", default.top_k)), index=idx.get("kind", "auto"),
        ann_from=int(idx.get("ann_from", default.ann_from)))


def _quota_limit(d: dict[str, Any]) -> QuotaLimit:
    return QuotaLimit(
        cost_usd=d.get("cost_usd"), tokens=d.get("tokens"), requests=d.get("requests"),
        by_provider=tuple((name, _quota_limit(sub)) for name, sub in (d.get("by_provider") or {}).items()),
        by_model=tuple((name, _quota_limit(sub)) for name, sub in (d.get("by_model") or {}).items()))


def _tokenizer(m: dict[str, Any], name: str, providers: dict[str, Provider]) -> str | None:
    """The encoding that counts the model's prompts exactly (engine/routing/tokens.py), or None."""
    from engine.routing.tokens import tokenizer_of

    p = providers.get(m["provider"])
    return tokenizer_of(p.adapter if p is not None else "", m.get("id", name), m.get("tokenizer"))


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
