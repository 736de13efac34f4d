"""The policy as immutable values: what `load_policy` returns once a YAML file is valid.

Every object here is a frozen, slotted dataclass built from a schema-valid document, so the
rest of the engine never sees raw YAML. Positions are kept separately (see `load.Located`)
so that these values stay cheap to compare and hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Strategy = Literal["best", "cheapest", "fastest", "ordered"]
Window = Literal["minute", "hour", "day", "month"]
OnExceed = Literal["reject", "downgrade"]
PromptLogging = Literal["hash", "full", "none"]
AdapterKind = Literal["openai", "anthropic", "gemini", "openai_compatible", "simulated"]

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
    scores: tuple[tuple[str, int], ...] = ()
    latency: LatencyPrior | None = None
    limits: Limits = field(default_factory=Limits)
    order: int = 0
    """Position in `models`; breaks ranking ties."""

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
    index: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaLimit:
    """Any subset of the three measures; `None` means not limited on that measure."""

    cost_usd: float | None = None
    tokens: int | None = None
    requests: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    """A budget over a calendar window, counted per combination of `scope` values."""

    name: str
    scope: tuple[str, ...]
    window: Window
    limit: QuotaLimit
    on_exceed: OnExceed = "reject"


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
class Policy:
    """A whole, schema-valid routing policy (POLICY.md, version 1)."""

    version: int
    providers: dict[str, Provider] = field(hash=False, compare=True)
    models: dict[str, Model] = field(hash=False, compare=True)
    signals: dict[str, Signal] = field(hash=False, compare=True)
    query_types: tuple[QueryTypeRule, ...]
    routes: tuple[Route, ...]
    quotas: tuple[Quota, ...] = ()
    cache: CacheConfig = field(default_factory=CacheConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    deadline_s: float = 60.0
    log: LogConfig = field(default_factory=LogConfig)
    metrics_tenant_label: bool = False
    """Whether Prometheus metrics may carry a tenant label (unbounded cardinality)."""
    source: str = "<policy>"
    """File the policy was read from; used in diagnostics."""
    digest: str = ""
    """sha256 of the file's bytes: the policy version reported by the service and the log."""
