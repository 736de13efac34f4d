"""Exceptions raised by the engine.

Two roots, as in any router: the user's configuration or call being wrong, and the world
failing. Provider failures themselves live in `adapters.errors` (`ProviderError` and its
taxonomy); the engine wraps them only when every model of a plan has failed.

    EngineError
    ├── PolicyError             the policy file is unusable (carries all diagnostics)
    ├── RequestError            the caller's request is malformed (empty prompt, bad meta...)
    ├── RoutingRefused          the policy leaves no model for this request (says why per model)
    ├── QuotaExceeded           a quota with `on_exceed: reject` has no room (names it and its reset)
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


class AllModelsFailed(EngineError):
    """Every attempt of the plan failed; `attempts` lists (model, error class, message) in order."""

    def __init__(self, attempts: Sequence[tuple[str, str, str]], request_id: str | None = None) -> None:
        self.attempts = tuple(attempts)
        self.request_id = request_id
        lines = "; ".join(f"{m}: {cls}: {msg}" for m, cls, msg in self.attempts) or "no model was tried"
        super().__init__(f"all models failed ({len(self.attempts)} attempts): {lines}")
