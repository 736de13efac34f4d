"""The rows of the decision log as values (built once, then only read).

One `RequestRecord` per routed request, one `AttemptRecord` per model tried, plus
`EventRecord` (health and policy changes) and `FeedbackRecord` (scores sent back by the app).
Field order is column order; `docs/logging.md` says what each column means and a test keeps
the two, the migrations and these classes in step.

`values()` is the hot path of the writer thread: it returns the column values in `*_COLUMNS`
order with the JSON columns already encoded, so that `executemany` can bind them directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.store.outcomes import Outcome  # re-exported: the vocabulary has its own module

__all__ = [
    "ATTEMPT_COLUMNS",
    "EVENT_COLUMNS",
    "FEEDBACK_COLUMNS",
    "REQUEST_COLUMNS",
    "AttemptOutcome",
    "AttemptRecord",
    "EventRecord",
    "FeedbackRecord",
    "Outcome",
    "RequestRecord",
]

AttemptOutcome = Literal["ok", "error", "skipped"]

# One shared C encoder: compact, keeps non-ASCII text readable in the file, and never raises
# on an odd value in `meta` (a datetime, a Path): losing a row over a metadata type is worse
# than storing its str().
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

# Plans repeat (a route yields a handful of distinct plans), and so do most `meta` and `features`
# dicts (a tenant, a key id, the same few flags): their JSON is remembered. A dict is remembered
# by a frozen copy of its items that keeps each value's type (True, 1 and 1.0 hash alike but
# encode differently; floats by their repr), when every value is a scalar or, one level down, a
# dict of scalars. Encoding is most of the writer thread's Python work, done with the GIL held.
_remembered_json: dict[Any, str] = {}
_REMEMBER_MAX = 4096
_SCALARS = (str, bool, int, type(None))


def _remember(key: Any, value: Any) -> str:
    """`value`'s JSON, from memory when `key` was seen (the memory starts over when it is full)."""
    try:
        encoded = _remembered_json.get(key)
    except TypeError:  # an unhashable part (a list inside a plan tuple): encoded, not remembered
        return _encode_json(value)
    if encoded is None:
        encoded = _encode_json(value)
        if len(_remembered_json) >= _REMEMBER_MAX:
            _remembered_json.clear()
        _remembered_json[key] = encoded
    return encoded


def _encode_plan(plan: tuple[str, ...]) -> str:
    if type(plan) is not tuple:  # a caller passed a list: encoded, not remembered
        return _encode_json(plan)
    return _remember(plan, plan)


def _frozen(m: Mapping[str, Any], nested: bool = True) -> tuple[Any, ...] | None:
    """The mapping's items with their types, hashable; None when one is not a plain scalar."""
    out: list[Any] = []
    for k, v in m.items():
        t = type(v)
        if type(k) is not str:
            return None
        if t is float:
            out.append((k, t, repr(v)))  # -0.0 == 0.0, and a NaN equals no other
        elif t in _SCALARS:
            out.append((k, t, v))
        elif t is dict and nested:
            inner = _frozen(v, nested=False)
            if inner is None:
                return None
            out.append((k, dict, inner))
        else:
            return None
    return tuple(out)


def _encode_mapping(m: Mapping[str, Any]) -> str:
    key = _frozen(m) if type(m) is dict else None
    return _encode_json(m) if key is None else _remember((dict, key), m)


REQUEST_COLUMNS: tuple[str, ...] = (
    "id", "ts", "policy_digest", "tenant", "api_key_id", "route", "query_type", "plan", "model", "provider",
    "attempts", "fallbacks", "outcome", "error_class", "error_message", "prompt_tokens", "input_tokens",
    "output_tokens", "cost_usd", "latency_ms", "cache_hit", "saved_cost_usd", "stream", "max_tokens",
    "temperature", "prompt_hash", "prompt", "meta", "features", "downgraded", "needs", "tools_offered", "images",
    "output_format", "seed", "finish_reason", "tool_calls",
)  # fmt: skip
"""Columns of `requests`, in table order."""

ATTEMPT_COLUMNS: tuple[str, ...] = (
    "request_id", "n", "model", "provider", "ts", "latency_ms", "outcome", "error_class", "error_message",
    "input_tokens", "output_tokens", "cost_usd", "retry_after",
)  # fmt: skip
"""Columns of `attempts` that a record fills (`id` is assigned by SQLite)."""

EVENT_COLUMNS: tuple[str, ...] = ("ts", "kind", "model", "detail")
"""Columns of `events` that a record fills (`id` is assigned by SQLite)."""

FEEDBACK_COLUMNS: tuple[str, ...] = ("request_id", "ts", "score", "label")
"""Columns of `feedback` that a record fills (`id` is assigned by SQLite)."""


# Not frozen, unlike the other records: a frozen dataclass's __init__ pays one object.__setattr__
# call per field, and this one has 37 and is built for every request on the event loop (about a
# quarter of a cache hit, measured). Nothing mutates a record after it is built; the writer only reads.
@dataclass(slots=True, kw_only=True)
class RequestRecord:
    """One routed request: its decision, its outcome and what it cost.

    Booleans are stored as 0/1; `plan` is stored as a JSON list, `meta` and `features` as JSON
    objects. `prompt` stays None unless the policy says `log.prompts: full`.
    """

    id: str
    """Request id (unique across every process writing the file)."""
    ts: float
    """Unix time the request started."""
    policy_digest: str | None = None
    """Digest of the policy that decided it."""
    tenant: str | None = None
    api_key_id: str | None = None
    route: str | None = None
    """Route that matched; None if refused before routing."""
    query_type: str | None = None
    plan: tuple[str, ...] = ()
    """Model names in the order the plan would try them."""
    model: str | None = None
    """Model that served the response; None if none did."""
    provider: str | None = None
    attempts: int = 0
    """Attempts made, retries included."""
    fallbacks: int = 0
    """Models tried beyond the first."""
    outcome: Outcome
    error_class: str | None = None
    error_message: str | None = None
    prompt_tokens: int | None = None
    """Estimated input tokens (the heuristic `decide` used)."""
    input_tokens: int = 0
    """Input tokens billed, over every attempt."""
    output_tokens: int = 0
    cost_usd: float = 0.0
    """Total cost over every attempt."""
    latency_ms: float | None = None
    """Wall time of the whole request."""
    cache_hit: bool = False
    saved_cost_usd: float = 0.0
    """Cost a cache hit avoided."""
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    prompt_hash: str | None = None
    """sha256 hex of the normalized prompt."""
    prompt: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    features: Mapping[str, Any] = field(default_factory=dict)
    """Signals and `has_*` flags the decision saw."""
    downgraded: bool = False
    """A quota with `on_exceed: downgrade` changed the plan."""
    needs: tuple[str, ...] = ()
    """Model features the request needed (`tools`, `vision`, `json`, `json_schema`, `streaming`), sorted."""
    tools_offered: int = 0
    """Tool definitions the request carried."""
    images: int = 0
    """Image parts in its messages."""
    output_format: str | None = None
    """`text`, `json_object` or `json_schema`; None when the request was refused as malformed."""
    seed: int | None = None
    """The request's sampling seed, if it set one."""
    finish_reason: str | None = None
    """How the answer ended (`stop`, `length`, `tool_calls`, `content_filter`, `other`); None if none was served."""
    tool_calls: int = 0
    """Tool calls in the answer."""

    def values(self) -> tuple[Any, ...]:
        """Column values in `REQUEST_COLUMNS` order, JSON columns encoded."""
        return (
            self.id, self.ts, self.policy_digest, self.tenant, self.api_key_id, self.route, self.query_type,
            _encode_plan(self.plan), self.model, self.provider, self.attempts, self.fallbacks, self.outcome,
            self.error_class, self.error_message, self.prompt_tokens, self.input_tokens, self.output_tokens,
            self.cost_usd, self.latency_ms, self.cache_hit, self.saved_cost_usd, self.stream, self.max_tokens,
            self.temperature, self.prompt_hash, self.prompt, _encode_mapping(self.meta), _encode_mapping(self.features),
            self.downgraded, _encode_plan(self.needs), self.tools_offered, self.images, self.output_format,
            self.seed, self.finish_reason, self.tool_calls,
        )  # fmt: skip

    def as_row(self) -> dict[str, Any]:
        """The row as it is written to `requests`."""
        return dict(zip(REQUEST_COLUMNS, self.values(), strict=True))


@dataclass(slots=True, kw_only=True)  # not frozen, for the reason given at RequestRecord
class AttemptRecord:
    """One call (or deliberate skip) of one model on behalf of a request."""

    request_id: str
    n: int
    """1-based order within the request, retries included."""
    model: str
    provider: str | None = None
    ts: float
    """Unix time the attempt started."""
    latency_ms: float | None = None
    outcome: AttemptOutcome
    error_class: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    retry_after: float | None = None
    """Seconds the provider asked to wait (`Retry-After`), if it said."""

    def values(self) -> tuple[Any, ...]:
        """Column values in `ATTEMPT_COLUMNS` order."""
        return (
            self.request_id, self.n, self.model, self.provider, self.ts, self.latency_ms, self.outcome,
            self.error_class, self.error_message, self.input_tokens, self.output_tokens, self.cost_usd,
            self.retry_after,
        )  # fmt: skip

    def as_row(self) -> dict[str, Any]:
        """The row as it is written to `attempts` (without the SQLite-assigned `id`)."""
        return dict(zip(ATTEMPT_COLUMNS, self.values(), strict=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """A change of the router's state worth finding later (a circuit opening, a policy reload)."""

    ts: float
    kind: str
    """circuit_open, circuit_half_open, circuit_closed, demoted, restored, policy_reloaded, policy_rejected..."""
    model: str | None = None
    detail: str | None = None

    def values(self) -> tuple[Any, ...]:
        """Column values in `EVENT_COLUMNS` order."""
        return (self.ts, self.kind, self.model, self.detail)

    def as_row(self) -> dict[str, Any]:
        """The row as it is written to `events` (without the SQLite-assigned `id`)."""
        return dict(zip(EVENT_COLUMNS, self.values(), strict=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackRecord:
    """A judgement of a response sent back by the application (a thumbs up, a grader's score)."""

    request_id: str
    ts: float
    score: float | None = None
    label: str | None = None

    def values(self) -> tuple[Any, ...]:
        """Column values in `FEEDBACK_COLUMNS` order."""
        return (self.request_id, self.ts, self.score, self.label)

    def as_row(self) -> dict[str, Any]:
        """The row as it is written to `feedback` (without the SQLite-assigned `id`)."""
        return dict(zip(FEEDBACK_COLUMNS, self.values(), strict=True))
