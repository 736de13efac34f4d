"""Exceptions raised by the engine.

Two roots, as in any router: the user's configuration or call being wrong, and the world
failing. Provider failures themselves live in `adapters.errors` (`ProviderError` and its
taxonomy); the engine wraps them only when every model of a plan has failed.

    EngineError
    ├── PolicyError             the policy file is unusable (carries all diagnostics)
    ├── RequestError            the caller's request is malformed (empty prompt, bad meta...)
    ├── RoutingRefused          the policy leaves no model for this request (says why per model)
    │   └── RateLimitExceeded   a per-tenant / per-key `limits` entry has no room now (says when)
    ├── QuotaExceeded           a quota with `on_exceed: reject` has no room (names it and its reset)
    │   └── StateUnavailable    the shared state store (Redis) is down and quotas fail closed
    └── AllModelsFailed         every attempt of the plan failed (lists each attempt and cause)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.policy.diagnostics import Diagnostic


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class PolicyError(EngineError):
    """A policy could not be loaded: syntax, schema, references or static checks.

    `diagnostics` holds every problem found, sorted by position, not only the first.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic], source: str = "<policy>") -> None:
        self.diagnostics = tuple(diagnostics)
        self.source = source
        errors = [d for d in self.diagnostics if d.severity == "error"]
        head = errors[0].format() if errors else f"{source}: invalid policy"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(head + more)

    def report(self) -> str:
        """All diagnostics, one per line, in `FILE:LINE:COL: severity: message (at path)` form."""
        return "\n".join(d.format() for d in self.diagnostics)


class RequestError(EngineError, ValueError):
    """The caller's request cannot be routed as given (empty prompt, max_tokens <= 0, ...)."""


class RoutingRefused(EngineError):
    """The policy leaves no model for this request; `decision` says what excluded each one."""

    def __init__(self, message: str, decision: Any = None) -> None:
        super().__init__(message)
        self.decision = decision


class QuotaExceeded(EngineError):
    """A quota has no room for this request and its policy says `on_exceed: reject`."""

    def __init__(self, quota: str, scope_key: str, measure: str, limit: float, used: float,
                 resets_at: float, requested: float | None = None) -> None:
        self.quota = quota
        self.requested = requested
        """This request's estimate on `measure`, when known."""
        self.scope_key = scope_key
        self.measure = measure
        self.limit = limit
        self.used = used
        self.resets_at = resets_at
        import datetime as _dt

        when = _dt.datetime.fromtimestamp(resets_at, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if requested is not None and requested > limit:
            # waiting for the reset cannot help: say what can
            tail = (f"; this one request's estimate ({measure} {requested:g}) exceeds the whole limit, so it can "
                    "never fit: lower max_tokens or the prompt, or raise the limit")
        else:
            tail = f"; resets at {when}"
        super().__init__(f"quota {quota!r} exceeded for {scope_key or 'global'}: {measure} used {used:g} of "
                         f"{limit:g}{tail}")


class RateLimitExceeded(RoutingRefused):
    """A per-tenant or per-key rate limit (`limits:`) has no room now; nothing was sent.

    Attributes:
        limit: the `limits` entry's name.
        scope_key: whom it counts, e.g. `tenant=acme`.
        retry_after: seconds until the request would fit.
    """

    def __init__(self, limit: str, scope_key: str, measure: str, retry_after: float) -> None:
        self.limit = limit
        self.scope_key = scope_key
        self.measure = measure
        self.retry_after = retry_after
        super().__init__(f"rate limit {limit!r} ({measure}) exceeded for {scope_key}; retry in {retry_after:.1f}s")


class StateUnavailable(QuotaExceeded):
    """The shared state store is unreachable and the policy says quotas fail closed (`on_failure.quotas: reject`).

    A subclass of `QuotaExceeded` so that it takes the same path (the model is skipped, the request
    is logged as refused by quota), but the service answers it with 503 `state_unavailable`.
    """

    def __init__(self, quota: str, scope_key: str, reason: str, retry_at: float) -> None:
        super().__init__(quota, scope_key, "state", 0.0, 0.0, retry_at)
        self.reason = reason
        self.args = (f"quota {quota!r} cannot be checked: the shared state store is unavailable ({reason}); "
                     "the policy fails closed (state.on_failure.quotas: reject)",)

    def __str__(self) -> str:
        return str(self.args[0])


class AllModelsFailed(EngineError):
    """Every attempt of the plan failed; `attempts` lists (model, error class, message) in order."""

    def __init__(self, attempts: Sequence[tuple[str, str, str]], request_id: str | None = None) -> None:
        self.attempts = tuple(attempts)
        self.request_id = request_id
        super().__init__(_attempts_summary(self.attempts))


_CAUSE_CHARS = 160  # an attempt's cause in the message; the decision log keeps the full text


def _attempts_summary(attempts: Sequence[tuple[str, str, str]]) -> str:
    """`all models failed (3 attempts): m1: Cls: cause (x2); m2: Cls: cause`: each distinct
    failure once, in order, with how often it repeated (retries of one cause say nothing new)."""
    if not attempts:
        return "all models failed (no model was tried)"
    seen: dict[tuple[str, str, str], int] = {}
    for model, cls, msg in attempts:
        cause = " ".join(msg.split())
        if len(cause) > _CAUSE_CHARS:
            cause = cause[: _CAUSE_CHARS - 3] + "..."
        key = (model, cls, cause)
        seen[key] = seen.get(key, 0) + 1
    parts = [f"{m}: {cls}: {cause}" if cause else f"{m}: {cls}" for m, cls, cause in seen]
    parts = [p + (f" (x{n})" if n > 1 else "") for p, n in zip(parts, seen.values(), strict=True)]
    n = len(attempts)
    return f"all models failed ({n} attempt{'s' if n != 1 else ''}): {'; '.join(parts)}"
