"""Provider and model rate limits: requests per minute, tokens per minute and concurrency.

Each provider and each model with `limits:` gets up to three gates:

- rpm: `aiolimiter.AsyncLimiter(rpm, 60)`, one unit per request;
- tpm: `AsyncLimiter(tpm, 60)` acquired with `amount=tokens`, so big requests weigh more;
- concurrency: an `asyncio.Semaphore` held until the `Permit` is released.

A request passes its model's gates and its provider's (a provider limit is shared by every
model it serves). The runtime asks `wait_estimate`/`unavailable` before choosing a plan and
`acquire` when it dispatches: a model whose limiter would hold the request past its deadline
is treated as unavailable and the plan moves on, instead of sleeping (DESIGN.md).

Time is the event loop's (`loop.time()`), because that is what aiolimiter reads; deadlines
passed in are loop-time instants for the same reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from aiolimiter import AsyncLimiter

from engine.errors import EngineError
from engine.policy.model import Limits, Model, Provider
from engine.runtime.clock import Clock

__all__ = ["LimitWouldExceedDeadline", "Permit", "RateLimits"]


class LimitWouldExceedDeadline(EngineError):
    """A rate limit would make the request wait past its deadline; nothing was consumed.

    Attributes:
        model: the model asked for.
        wait_s: how long the request would have had to wait from now.
        limit: which limit is the bottleneck, e.g. `provider openai rpm`.
    """

    def __init__(self, model: str, wait_s: float, limit: str = "") -> None:
        self.model = model
        self.wait_s = wait_s
        self.limit = limit
        which = f" ({limit})" if limit else ""
        super().__init__(f"rate limit{which} of {model!r} would wait {wait_s:.3f}s, past the request's deadline")


@dataclass(frozen=True, slots=True)
class _Rate:
    """One leaky bucket and what it meters."""

    label: str
    """e.g. `model gpt-4o rpm`; shown in reasons and errors."""
    limiter: AsyncLimiter
    tokens: bool
    """True: acquire the request's token count (tpm); False: one unit per request (rpm)."""

    def amount(self, tokens: int) -> float:
        if not self.tokens:
            return 1.0
        # A request bigger than the whole bucket could never pass: let it through once the
        # bucket is empty instead, which is the closest to the limit the provider can honour.
        return float(min(max(tokens, 0), self.limiter.max_rate))

    def wait(self, amount: float) -> float:
        """Seconds until `amount` fits, counting the waiters queued ahead of it."""
        lim = self.limiter
        if not hasattr(lim, "_event_loop"):
            return 0.0  # aiolimiter binds a loop on first use: never used means empty
        if lim.has_capacity(amount) and not lim._waiters:
            return 0.0
        # has_capacity() has just leaked the bucket, so `_level` is current. aiolimiter wakes
        # waiters smallest amount first (FIFO among equals), so only those of at most our
        # amount are served before us; larger ones queue behind.
        ahead = sum(a for a, _, fut in lim._waiters if a <= amount and not fut.done())
        excess = lim._level + ahead + amount - lim.max_rate
        return max(excess, 0.0) * lim.time_period / lim.max_rate


@dataclass(frozen=True, slots=True)
class _Gates:
    """Everything one model's request must pass, model gates first."""

    rates: tuple[_Rate, ...]
    semaphores: tuple[asyncio.Semaphore, ...]


class Permit:
    """The right to send one request; frees its concurrency slots on `release()` or exit.

    Use as `async with await limits.acquire(...):` or call `release()` yourself; releasing
    twice is harmless.
    """

    __slots__ = ("_semaphores", "model")

    def __init__(self, model: str, semaphores: tuple[asyncio.Semaphore, ...]) -> None:
        self.model = model
        self._semaphores = semaphores

    def release(self) -> None:
        """Free the concurrency slots held by this permit (idempotent)."""
        held, self._semaphores = self._semaphores, ()
        for sem in held:
            sem.release()

    @property
    def released(self) -> bool:
        """True once the slots have been given back."""
        return not self._semaphores

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class RateLimits:
    """The rate limiters of one policy, keyed by provider and model.

    Args:
        providers: the policy's providers; their `limits` are shared by all their models.
        models: the policy's models; their own `limits` apply on top of the provider's.
        clock: accepted so every runtime component is built alike; unused, because
            aiolimiter measures time with the running event loop's clock.
        period_s: length of the "minute" that rpm and tpm are counted over. Only tests change
            it, to watch many periods go by in little real time.

    Limiters bind to the event loop that first uses them: build one `RateLimits` per loop.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        models: Mapping[str, Model],
        *,
        clock: Clock | None = None,
        period_s: float = 60.0,
    ) -> None:
        self._clock = clock
        provider_gates = {name: _gates(f"provider {name}", p.limits, period_s) for name, p in providers.items()}
        self._gates: dict[str, _Gates] = {}
        for name, model in models.items():
            own = _gates(f"model {name}", model.limits, period_s)
            shared = provider_gates.get(model.provider, _Gates((), ()))
            self._gates[name] = _Gates(own.rates + shared.rates, own.semaphores + shared.semaphores)

    def _for(self, model: str) -> _Gates:
        try:
            return self._gates[model]
        except KeyError:
            raise KeyError(f"rate limits: unknown model {model!r}") from None

    def _bottleneck(self, gates: _Gates, tokens: int) -> tuple[float, str]:
        worst, label = 0.0, ""
        for rate in gates.rates:
            w = rate.wait(rate.amount(tokens))
            if w > worst:
                worst, label = w, rate.label
        return worst, label

    def wait_estimate(self, model: str, tokens: int) -> float:
        """Seconds a request for `model` of `tokens` tokens would wait now; 0.0 if it would pass at once.

        Counts the rpm and tpm limiters of the model and of its provider (they drain in
        parallel, so the longest wait is the answer) and the requests already queued on them.
        Concurrency is not included: how long a slot stays busy is not knowable in advance.

        Raises:
            KeyError: `model` is not in the policy.
        """
        return self._bottleneck(self._for(model), tokens)[0]

    def unavailable(self, tokens_by_model: Mapping[str, int], deadline: float) -> dict[str, str]:
        """The `RuntimeState.unavailable` mapping: models whose limiters would wait past `deadline`.

        Args:
            tokens_by_model: each model considered and the tokens its request would take.
            deadline: loop-time instant by which the request must be done.

        Returns:
            model -> reason, for every model that cannot take the request in time.
        """
        now = _loop_time()
        out: dict[str, str] = {}
        for model, tokens in tokens_by_model.items():
            wait, label = self._bottleneck(self._for(model), tokens)
            if wait > 0.0 and now + wait > deadline:
                out[model] = f"rate limit ({label}) would wait {wait:.2f}s, past the deadline"
        return out

    async def acquire(self, model: str, tokens: int, *, deadline: float) -> Permit:
        """Wait for room under every limit of `model` and its provider, then return a `Permit`.

        Args:
            model: the model about to be called.
            tokens: tokens the request will take (prompt + max_tokens), for tpm.
            deadline: loop-time instant (`asyncio.get_running_loop().time()` scale) the request
                must finish by.

        Raises:
            LimitWouldExceedDeadline: the wait would end after `deadline`. Raised at once when the
                rate limiters say so (nothing consumed), or when no concurrency slot frees up in time.
            KeyError: `model` is not in the policy.
        """
        gates = self._for(model)
        loop = asyncio.get_running_loop()
        # Concurrency first: a slot can be given back, rate capacity cannot. Waiting for slots
        # before touching the buckets keeps the "nothing consumed" promise when we give up.
        permit = await self.acquire_slots(model, deadline=deadline)
        try:
            wait, label = self._bottleneck(gates, tokens)
            if wait > 0.0 and loop.time() + wait > deadline:
                raise LimitWouldExceedDeadline(model, wait, label)
            # Model buckets first, then the provider's: while we wait on one, the others keep
            # leaking, so the total wait is close to the longest single wait estimated above.
            for rate in gates.rates:
                await rate.limiter.acquire(rate.amount(tokens))
        except BaseException:
            permit.release()
            raise
        return permit

    async def acquire_slots(self, model: str, *, deadline: float) -> Permit:
        """Only the concurrency part of `acquire`: wait for a slot of `model` and of its provider.

        Raises:
            LimitWouldExceedDeadline: no slot frees up before `deadline`.
        """
        gates = self._for(model)
        loop = asyncio.get_running_loop()
        held: list[asyncio.Semaphore] = []
        try:
            for sem in gates.semaphores:
                if sem.locked():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise LimitWouldExceedDeadline(model, 0.0, "concurrency")
                    try:
                        await asyncio.wait_for(sem.acquire(), remaining)
                    except asyncio.TimeoutError:
                        raise LimitWouldExceedDeadline(model, remaining, "concurrency") from None
                else:
                    await sem.acquire()  # returns without suspending when a slot is free
                held.append(sem)
        except BaseException:
            for sem in held:
                sem.release()
            raise
        return Permit(model, tuple(held))


def _gates(owner: str, limits: Limits, period_s: float) -> _Gates:
    rates: list[_Rate] = []
    if limits.rpm:
        rates.append(_Rate(f"{owner} rpm", AsyncLimiter(limits.rpm, period_s), tokens=False))
    if limits.tpm:
        rates.append(_Rate(f"{owner} tpm", AsyncLimiter(limits.tpm, period_s), tokens=True))
    sems = (asyncio.Semaphore(limits.concurrency),) if limits.concurrency else ()
    return _Gates(tuple(rates), sems)


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        # Outside a loop: asyncio's default loop clock is time.monotonic().
        return time.monotonic()
