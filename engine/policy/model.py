"""The policy as immutable values: what `load_policy` returns once a YAML file is valid.

Every object here is a frozen, slotted dataclass built from a schema-valid document, so the
rest of the engine never sees raw YAML. Positions are kept separately (see `load.Located`)
so that these values stay cheap to compare and hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Strategy = Literal["best", "cheapest", "fastest", "ordered", "largest_context"]
GroupStrategy = Literal["weighted", "shuffle", "least_busy", "lowest_latency"]
Window = str
"""`minute`, `hour`, `day`, `month` (calendar, UTC) or a rolling span such as `24h`, `7d`, `30d`."""
OnExceed = Literal["reject", "downgrade"]
PromptLogging = Literal["hash", "full", "none"]
AdapterKind = Literal["openai", "anthropic", "gemini", "openai_compatible", "simulated"]

FEATURES = ("streaming", "tools", "json", "json_schema", "vision")
"""Capability names a model may declare; a request needs the ones its content uses."""

QUERY_TYPES_BUILTIN = ("chat", "code", "math", "reasoning", "creative", "summarize", "extract", "translate")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Rate limits of a provider or a model; `None` means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    """How to reach one vendor (or the simulated stand-in)."""

    name: str
    adapter: AdapterKind
    api_key: str | None = field(default=None, repr=False)  # a secret: never printed
    base_url: str | None = None
    timeout_s: float = 30.0
    limits: Limits = field(default_factory=Limits)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Adapter-specific settings, e.g. `latency_ms`, `failure_rate`, `seed` for `simulated`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    source: str = field(default="policy", compare=False)
    """Where the figures come from: `policy`, the catalogue (`genai-prices X: provider/model`,
    for `price: auto`) or `unknown` (neither had it: the model counts as free)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyPrior:
    """Latency assumed until health has measured the model."""

    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Model:
    """Something a route can pick: a vendor model behind one provider."""

    name: str
    provider: str
    id: str
    price: Price
    context_window: int
    max_output_tokens: int | None = None
    features: frozenset[str] = frozenset()
    features_declared: bool = True
    """False when the policy gives no `features:` list: capability checks then let the model
    through (the adapter still refuses what it cannot do), as before capability routing."""
    scores: tuple[tuple[str, int], ...] = ()
    latency: LatencyPrior | None = None
    limits: Limits = field(default_factory=Limits)
    order: int = 0
    """Position in `models`; breaks ranking ties."""
    context_window_source: str = field(default="policy", compare=False)
    """Where `context_window` comes from: `policy`, the catalogue, or `unknown` (an error)."""
    tokenizer: str | None = None
    """The tiktoken encoding that counts its prompts exactly (`engine.routing.tokens`); None: the estimate."""

    def score(self, query_type: str) -> int:
        """The 1-5 capability score for `query_type`; 0 when the policy gives none."""
        for qt, s in self.scores:
            if qt == query_type:
                return s
        return 0

    def est_cost(self, prompt_tokens: int, max_tokens: int) -> float:
        """Worst-case cost of one request in USD (POLICY.md, decision step 3)."""
        return (prompt_tokens * self.price.input + max_tokens * self.price.output) / 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """A named boolean feature of a request. Exactly one of the sources is set."""

    name: str
    regex: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    when: str | None = None
    classify: str | None = None
    """Label of the built-in query classifier; true when it picks this label."""
    similar_to: tuple[str, ...] = ()
    """Example prompts; true when the last user message is this similar to one (`similar_threshold`)."""
    similar_threshold: float = 0.7


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryTypeRule:
    """One classification rule; the first whose `when` holds names the query type."""

    type: str
    when: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Require:
    """What a candidate must offer to be eligible for a route."""

    score: int | None = None
    features: frozenset[str] = frozenset()
    max_p95_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """An ordered routing rule; the first route whose `when` holds serves the request."""

    name: str
    when: str | None = None
    candidates: tuple[str, ...] | None = None
    require: Require = field(default_factory=Require)
    max_cost_usd: float | None = None
    strategy: Strategy = "best"
    fallback: tuple[str, ...] = ()
    downgrade_to: tuple[str, ...] | None = None
    """Models a `downgrade` quota may switch to; None: the route's own candidates and fallbacks."""
    index: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """Several deployments of one model, picked between by `strategy` and pinned by `name`.

    Attributes:
        name: what clients and routes call the group.
        models: its member models, in policy order.
        strategy: how members are ordered for one request.
        weights: member -> weight for `weighted` (members without one weigh 1).
    """

    name: str
    models: tuple[str, ...]
    strategy: GroupStrategy = "weighted"
    weights: tuple[tuple[str, float], ...] = ()

    def weight(self, model: str) -> float:
        """The member's weight (1 unless the policy says otherwise)."""
        for m, w in self.weights:
            if m == model:
                return w
        return 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaLimit:
    """Any subset of the three measures; `None` means not limited on that measure."""

    cost_usd: float | None = None
    tokens: int | None = None
    requests: int | None = None
    by_provider: tuple[tuple[str, QuotaLimit], ...] = ()
    """Per-provider limits in one quota: (provider, its limits); counted per provider."""
    by_model: tuple[tuple[str, QuotaLimit], ...] = ()
    """Per-model limits in one quota: (model, its limits); counted per model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    """A budget over a calendar window, counted per combination of `scope` values."""

    name: str
    scope: tuple[str, ...]
    window: Window
    limit: QuotaLimit
    on_exceed: OnExceed = "reject"
    when: str | None = None
    """Only requests for which this expression holds are counted (and limited) by the quota."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SemanticCacheConfig:
    """The semantic layer behind the exact cache (`cache.semantic`); see docs/policy.md."""

    enabled: bool = True
    embedder: str = "bundled"
    """`bundled`, `hashing`, or `provider:NAME` for an API embedder (then `embedder_model` is set)."""
    embedder_model: str | None = None
    embedder_dimension: int | None = None
    threshold: float = 0.76
    """Cosine a neighbour needs before the guards; calibrated on the dev pairs (benchmarks/RESULTS.md)."""
    query_types: tuple[tuple[str, float | None], ...] = ()
    """(query type, its threshold or None = semantic cache off for that type)."""
    top_k: int = 5
    index: Literal["auto", "exact", "ann"] = "auto"
    ann_from: int = 10_000

    def threshold_for(self, query_type: str) -> float | None:
        """The threshold for `query_type`, or None when that type never takes semantic hits."""
        for qt, t in self.query_types:
            if qt == query_type:
                return t
        return self.threshold


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Exact response cache settings."""

    enabled: bool = False
    ttl_s: float = 3600.0
    max_entries: int = 10_000
    scope: Literal["tenant", "global"] = "tenant"
    when: str | None = None
    normalize: tuple[str, ...] = ("whitespace",)
    backend: Literal["memory", "sqlite"] = "memory"
    path: str | None = None
    """SQLite file for `backend: sqlite`; defaults to the decision log's file."""
    semantic: SemanticCacheConfig | None = None
    """The semantic layer, or None when it is off."""
    seeded: bool = False
    """Whether requests that set `seed` may be cached (the seed is part of the key)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitThresholds:
    """When to stop sending traffic to a model for a while."""

    error_rate: float = 0.5
    cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoteThresholds:
    """When to move a model to the end of every plan."""

    error_rate: float | None = 0.2
    p95_latency_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    """Automatic routing adjustments from measured performance."""

    window_s: float = 60.0
    min_requests: int = 20
    open_circuit: CircuitThresholds = field(default_factory=CircuitThresholds)
    demote: DemoteThresholds = field(default_factory=DemoteThresholds)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """Attempts per model (the first included) for transient errors."""

    max_attempts: int = 2
    backoff_ms: float = 200.0
    max_backoff_ms: float = 5000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """Where and how decisions are recorded."""

    sqlite: str | None = None
    prompts: PromptLogging = "hash"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateFailure:
    """What the router does while its shared state store is unreachable."""

    quotas: Literal["reject", "local"] = "reject"
    limits: Literal["local", "reject"] = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    """Where runtime state (quotas, limits, cache, health, single flight) lives."""

    backend: Literal["embedded", "redis"] = "embedded"
    url: str | None = field(default=None, repr=False)  # may hold a password: never printed
    prefix: str = "engine:"
    timeout_ms: float = 500.0
    retry_s: float = 1.0
    reservation_ttl_s: float | None = None
    """None: the policy's `deadline_s` plus 60 s."""
    on_failure: StateFailure = field(default_factory=StateFailure)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopedLimit:
    """A rate limit per tenant and/or client key (top-level `limits:`)."""

    name: str
    scope: tuple[str, ...]
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A whole, schema-valid routing policy (POLICY.md, version 1)."""

    version: int
    providers: dict[str, Provider] = field(hash=False, compare=True)
    models: dict[str, Model] = field(hash=False, compare=True)
    signals: dict[str, Signal] = field(hash=False, compare=True)
    query_types: tuple[QueryTypeRule, ...]
    routes: tuple[Route, ...]
    quotas: tuple[Quota, ...] = ()
    groups: dict[str, Group] = field(default_factory=dict, hash=False, compare=True)
    cache: CacheConfig = field(default_factory=CacheConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    deadline_s: float = 60.0
    log: LogConfig = field(default_factory=LogConfig)
    state: StateConfig = field(default_factory=StateConfig)
    limits: tuple[ScopedLimit, ...] = ()
    """Per-tenant / per-key rate limits, checked before any model is tried."""
    metrics_tenant_label: bool = False
    """Whether Prometheus metrics may carry a tenant label (unbounded cardinality)."""
    source: str = "<policy>"
    """File the policy was read from; used in diagnostics."""
    digest: str = ""
    """sha256 of the file's bytes: the policy version reported by the service and the log."""


def expand(policy: Policy, names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Model names for `names`, each group replaced by its members, duplicates dropped, unknown
    names left out (checks report them)."""
    out: dict[str, None] = {}
    for n in names:
        g = policy.groups.get(n)
        if g is not None:
            out.update((m, None) for m in g.models if m in policy.models)
        elif n in policy.models:
            out[n] = None
    return tuple(out)


def downgrade_reach(p: Policy, r: Route) -> tuple[str, ...]:
    """The models a `downgrade` quota can switch route `r` to, cheapest list price first: its
    `downgrade_to` list, else its own candidates and fallbacks (never a model outside them)."""
    if r.downgrade_to is not None:
        names = expand(p, r.downgrade_to)
    else:
        names = expand(p, [*(r.candidates or p.models), *r.fallback])
    return tuple(sorted(names, key=lambda n: (p.models[n].price.input + p.models[n].price.output,
                                              p.models[n].order)))
