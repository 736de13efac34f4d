"""Walk a plan: limits, quotas, circuits, attempts, retries and fallback (DESIGN.md,
"Runtime semantics").

The walk is the same for `generate` and `stream`; what an attempt *is* comes in as a
coroutine, so streaming can stop falling back once its first token is out.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from adapters.errors import (
    AuthError,
    BadRequest,
    ContextTooLong,
    InvalidInput,
    ProviderError,
    RateLimited,
)
from adapters.errors import Timeout as ProviderTimeout
from engine.errors import AllModelsFailed, QuotaExceeded
from engine.policy.model import Model, Policy
from engine.runtime.clock import Clock, bounded
from engine.runtime.health import HealthTracker
from engine.runtime.limits import LimitWouldExceedDeadline, Permit, RateLimits
from engine.runtime.quotas import QuotaContext, QuotaManager, Reservation

T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    """One call of one model (or a deliberate skip), as the log records it."""

    n: int
    model: str
    provider: str
    ts: float
    outcome: str  # ok | error | skipped
    latency_ms: float | None = None
    error_class: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    retry_after: float | None = None
    callers_error: bool = False
    """The error was the caller's bad input (`is_callers_error`), not the model failing."""


@dataclass(slots=True)
class Served(Generic[T]):
    """A successful attempt, with what must be settled when the caller is done with it."""

    value: T
    model: Model
    permit: Permit | None
    reservation: Reservation | None


@dataclass(slots=True)
class Walk:
    """State of one request's walk through its plan."""

    request_id: str
    tenant: str | None
    key: str | None
    est_tokens: int
    est_cost_of: Callable[[Model], float]
    deadline: float
    """Loop-time instant the whole request must finish by."""
    quota_skip: frozenset[str] = frozenset()
    """Conditional quotas whose `when` does not hold for this request."""
    attempts: list[Attempt] = field(default_factory=list)
    models_tried: list[str] = field(default_factory=list)
    quota_errors: list[QuotaExceeded] = field(default_factory=list)

    @property
    def callers_fault(self) -> bool:
        """Every model that was tried refused the request as the caller's bad input."""
        tried = [a for a in self.attempts if a.outcome == "error"]
        return bool(tried) and all(a.callers_error for a in tried)

    @property
    def fallbacks(self) -> int:
        """Models tried beyond the first."""
        return max(0, len(self.models_tried) - 1)

    def cost(self) -> float:
        """Spend over every attempt."""
        return sum(a.cost_usd for a in self.attempts)


class Dispatcher:
    """Executes plans against adapters with the policy's retry and fallback rules."""

    def __init__(self, policy: Policy, *, health: HealthTracker, limits: RateLimits | None,
                 quotas: QuotaManager | None, clock: Clock, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.health = health
        self.limits = limits
        self.quotas = quotas
        self.clock = clock
        self._rng = rng or random.Random()
        self.in_flight: dict[str, int] = {}
        """model -> vendor calls awaiting an answer now (what `least_busy` groups rank by)."""

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Capped exponential backoff with full jitter, never shorter than Retry-After."""
        r = self.policy.retry
        cap = min(r.max_backoff_ms, r.backoff_ms * (2 ** (attempt - 1))) / 1000
        delay: float = cap * (0.5 + self._rng.random() / 2)
        return max(delay, retry_after or 0.0)

    async def run(self, walk: Walk, plan: tuple[str, ...],
                  call: Callable[[Model, float], Awaitable[T]], *,
                  self_timed: Callable[[Model], bool] | None = None) -> Served[T]:
        """Try each model of `plan` until one attempt succeeds.

        `call(model, timeout)` is awaited under a backstop timer (`timeout` + 1 s) unless
        `self_timed(model)` says the call ends within `timeout` on its own (`LLMAdapter.keeps_deadline`).

        Raises:
            QuotaExceeded: every model was refused by a quota at reservation time.
            AllModelsFailed: nothing else worked; lists every attempt.
        """
        loop = asyncio.get_running_loop()
        failed_providers: dict[str, str] = {}
        min_window = 0  # after ContextTooLong: only larger windows are worth trying
        for idx, name in enumerate(plan):
            model = self.policy.models[name]
            skip = self._skip_reason(model, failed_providers, min_window)
            if skip is None and not await self.health.aallow(name):  # a shared backend claims probes here
                skip = f"circuit {self.health.state(name)}"
            if skip is not None:
                self._skip(walk, model, skip)
                continue
            ok, permit = await self._acquire(walk, model)
            if not ok:
                continue
            ok, reservation = await self._reserve(walk, model)
            if not ok:
                if permit is not None:
                    permit.release()
                continue
            walk.models_tried.append(name)
            last = idx == len(plan) - 1
            try:
                value = await self._attempts(walk, model, call, loop, last,
                                             self_timed is not None and self_timed(model))
            except _Next as nxt:
                await self.abandon(Served(None, model, permit, reservation))
                if nxt.provider_failed:
                    failed_providers[model.provider] = nxt.reason
                if nxt.context_too_long:
                    min_window = max(min_window, model.context_window)
                if nxt.deadline:
                    break
                continue
            except BaseException:
                await self.abandon(Served(None, model, permit, reservation))
                raise
            return Served(value, model, permit, reservation)
        if walk.quota_errors and not walk.models_tried:
            raise walk.quota_errors[0]
        raise AllModelsFailed([(a.model, a.error_class or "", a.error_message or "") for a in walk.attempts],
                              request_id=walk.request_id)

    async def finish(self, served: Served[Any], tokens: int, cost: float) -> None:
        """Release the permit and settle the quota reservation with actual usage."""
        if served.permit is not None:
            served.permit.release()
        if served.reservation is not None and self.quotas is not None:
            await self.quotas.asettle(served.reservation, tokens, cost)

    async def abandon(self, served: Served[Any]) -> None:
        """Release what a served attempt holds when its stream failed part way."""
        if served.permit is not None:
            served.permit.release()
        if served.reservation is not None and self.quotas is not None:
            await self.quotas.arelease(served.reservation)

    # -- steps ---------------------------------------------------------------------------

    def _skip_reason(self, model: Model, failed: dict[str, str], min_window: int) -> str | None:
        if model.provider in failed:
            return f"provider {model.provider} failed earlier in this request: {failed[model.provider]}"
        if min_window and model.context_window <= min_window:
            return f"context window {model.context_window} is not larger than the one that overflowed"
        return None

    def _skip(self, walk: Walk, model: Model, reason: str, error_class: str = "Skipped") -> None:
        walk.attempts.append(Attempt(n=len(walk.attempts) + 1, model=model.name, provider=model.provider,
                                     ts=self.clock.time(), outcome="skipped", error_class=error_class,
                                     error_message=reason))

    async def _acquire(self, walk: Walk, model: Model) -> tuple[bool, Permit | None]:
        """(may proceed, permit to release); a limiter that would pass the deadline skips."""
        if self.limits is None:
            return True, None
        try:
            return True, await self.limits.acquire(model.name, walk.est_tokens, deadline=walk.deadline)
        except LimitWouldExceedDeadline as e:
            self._skip(walk, model, str(e), "RateLimitedLocally")
            return False, None

    async def _reserve(self, walk: Walk, model: Model) -> tuple[bool, Reservation | None]:
        """(may proceed, reservation to settle); a full quota skips the model."""
        if self.quotas is None:
            return True, None
        ctx = QuotaContext(walk.tenant, walk.key, model.name, model.provider, walk.quota_skip)
        try:
            # the async forms only leave the loop for a thread when another process holds the lock
            return True, await self.quotas.areserve(ctx, walk.est_tokens, walk.est_cost_of(model))
        except QuotaExceeded as e:
            walk.quota_errors.append(e)
            self._skip(walk, model, str(e), "QuotaExceeded")
            return False, None

    async def _attempts(self, walk: Walk, model: Model, call: Callable[[Model, float], Awaitable[T]],
                        loop: asyncio.AbstractEventLoop, last: bool, self_timed: bool) -> T:
        provider = self.policy.providers[model.provider]
        max_attempts = self.policy.retry.max_attempts
        n = 0
        while True:
            n += 1
            remaining = walk.deadline - loop.time()
            if remaining <= 0:
                self._skip(walk, model, "request deadline reached", "Timeout")
                raise _Next("deadline", deadline=True)
            timeout = min(provider.timeout_s, remaining)
            started_wall, started = self.clock.time(), loop.time()
            try:
                # the adapter enforces `timeout` through its SDK; the backstop is for an SDK
                # that overruns it, so the request deadline always holds
                self.in_flight[model.name] = self.in_flight.get(model.name, 0) + 1
                try:
                    pending = call(model, timeout)
                    value = await (pending if self_timed else bounded(pending, timeout + 1.0))
                finally:
                    self.in_flight[model.name] -= 1
            except (ProviderError, InvalidInput, asyncio.TimeoutError) as e:
                err = _as_provider_error(e, model, timeout)
                ms = (loop.time() - started) * 1000
                callers = is_callers_error(err)
                walk.attempts.append(Attempt(n=len(walk.attempts) + 1, model=model.name, provider=model.provider,
                                             ts=started_wall, outcome="error", latency_ms=ms,
                                             error_class=type(err).__name__, error_message=err.message,
                                             retry_after=err.retry_after, callers_error=callers))
                # the caller's own bad input says nothing about the model: it is recorded as a
                # neutral outcome (which also hands a half-open circuit's probe back)
                self.health.record(model.name, ok=False, latency_ms=ms,
                                   error_class=CALLER_ERROR if callers else type(err).__name__)
                delay = None if callers else self._retry_delay(err, n, max_attempts, last)
                if delay is not None and loop.time() + delay < walk.deadline:
                    await asyncio.sleep(delay)
                    continue
                raise _Next(str(err), provider_failed=_fails_provider(err),
                            context_too_long=isinstance(err, ContextTooLong)) from e
            ms = (loop.time() - started) * 1000
            self.health.record(model.name, ok=True, latency_ms=ms)
            walk.attempts.append(Attempt(n=len(walk.attempts) + 1, model=model.name, provider=model.provider,
                                         ts=started_wall, outcome="ok", latency_ms=ms))
            return value

    def _retry_delay(self, err: ProviderError, n: int, max_attempts: int, last: bool) -> float | None:
        """Seconds to wait before retrying the same model, or None to move on."""
        if n >= max_attempts:
            return None
        if err.max_retries is not None and n > err.max_retries:
            return None
        if err.transient:
            return self.backoff_s(n, err.retry_after)
        if isinstance(err, RateLimited) and last:
            # rate limits move on at once; only the last model left is worth waiting for
            return self.backoff_s(n, err.retry_after)
        return None


class _Next(Exception):
    """Internal: this model is done for this request; try the next one."""

    def __init__(self, reason: str, *, provider_failed: bool = False, context_too_long: bool = False,
                 deadline: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.provider_failed = provider_failed
        self.context_too_long = context_too_long
        self.deadline = deadline


CALLER_ERROR = "InvalidInput"
"""The error class health is told about for a caller's bad input: one of
`engine.runtime.health.NEUTRAL_ERRORS`, so it never counts against the model."""

_CALLERS_STATUSES = frozenset({400, 413, 422})
"""Vendor statuses that answer the request's content (a malformed message, an invalid schema,
a body too large), not the model's state. A 404 (unknown model id) or 405 stays a failure of
the model: it is configuration, and every request to it will fail the same way."""


def is_callers_error(err: ProviderError) -> bool:
    """Whether `err` is the caller's own bad input rather than the model failing.

    That is a `BadRequest` raised before any call (status None: an option or a part this model
    cannot honour, an argument out of its range) or a vendor's 400/413/422 about the request.
    `ContextTooLong` and `ContentFiltered` are about the request too; health already treats
    them as neutral.
    """
    return isinstance(err, BadRequest) and (err.status is None or err.status in _CALLERS_STATUSES)


def _fails_provider(err: ProviderError) -> bool:
    """Whether the rest of this provider's models are skipped for the request: a bad key, or a
    vendor rejecting the request's shape (every model behind the same API would). A refusal
    before the call is about this one model's abilities; another model may have them."""
    return isinstance(err, AuthError) or (isinstance(err, BadRequest) and err.status is not None)


def _as_provider_error(e: BaseException, model: Model, timeout: float) -> ProviderError:
    if isinstance(e, ProviderError):
        return e
    if isinstance(e, InvalidInput):
        return BadRequest(str(e), provider=model.provider, model=model.id)
    return ProviderTimeout(f"no answer within {timeout:.1f}s", provider=model.provider, model=model.id)


def record_attempt_cost(walk: Walk, tokens_in: int, tokens_out: int, cost: float) -> None:
    """Put the served attempt's usage on its log row (the last `ok` attempt)."""
    for a in reversed(walk.attempts):
        if a.outcome == "ok":
            a.input_tokens, a.output_tokens, a.cost_usd = tokens_in, tokens_out, cost
            return


def mark_stream_failure(walk: Walk, error: BaseException) -> None:
    """A stream that failed after its first token: its attempt row becomes an error."""
    for a in reversed(walk.attempts):
        if a.outcome == "ok":
            a.outcome = "error"
            a.error_class = type(error).__name__
            a.error_message = getattr(error, "message", None) or str(error)
            return
