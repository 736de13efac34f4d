"""An offline provider with deterministic latency, text and failures, for demos and chaos tests.

It is a real adapter: validation, timing, error classes and cost go through the same base
flow as the vendor adapters. Outcomes are reproducible: the text depends only on the seed and
the conversation; latency and random failures on the seed, the conversation and how many
times that conversation was sent before (so a retry draws afresh, and a rerun repeats).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from adapters.base import LLMAdapter, Price, Reply, Request, Usage
from adapters.errors import (
    ContextTooLong,
    InvalidInput,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)
from adapters.tokens import estimate_messages_tokens, estimate_tokens

__all__ = ["FAULT_KINDS", "MidStream", "Outcome", "SimulatedAdapter"]

FAULT_KINDS: dict[str, type[ProviderError]] = {
    "rate_limited": RateLimited,
    "server_error": ServerError,
    "overloaded": Overloaded,
    "timeout": Timeout,
}
"""Random failures a simulated provider can produce, by the name used in `faults`."""

_Z95 = 1.6448536269514722  # standard normal quantile of 0.95
_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
_PIECES = re.compile(r"\S*\s*")


@dataclass(frozen=True, slots=True)
class MidStream:
    """A scripted outcome that streams `after_chunks` pieces of the usual reply, then fails.

    In `generate` the failure is raised at once (nothing was delivered).
    """

    error: ProviderError | type[ProviderError]
    after_chunks: int = 1


Outcome = str | BaseException | type[ProviderError] | Callable[[Request], str] | MidStream
"""What `script` accepts: a text to return, an exception (instance or ProviderError class) to
raise, a callable computing the text from the request, or a `MidStream` failure."""


@dataclass(frozen=True, slots=True)
class _Plan:
    latency_s: float
    text: str
    finish_reason: str
    error: BaseException | None
    fail_after: int | None  # pieces streamed before `error` (None: fail before any output)


class SimulatedAdapter(LLMAdapter):
    """A deterministic stand-in for a vendor.

    Args:
        provider: Provider name.
        model: Model id reported in completions.
        price: USD per million tokens.
        latency_ms: (p50, p95) of a log-normal latency, in milliseconds.
        failure_rate: Probability that a call fails with one of `faults`.
        seed: Seed of every random draw.
        timeout_s: Default attempt timeout; a drawn latency beyond it raises `Timeout`.
        faults: Names from `FAULT_KINDS` to pick random failures among (default: all).
        time_scale: Multiplies every simulated sleep (0 makes tests and demos instant).
        context_window: When set, inputs over it raise `ContextTooLong` (input + max_tokens).
        sleep: Coroutine used to wait, injectable for tests (default `asyncio.sleep`).
    """

    kind = "simulated"

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        price: Price | None = None,
        latency_ms: tuple[float, float] = (0.0, 0.0),
        failure_rate: float = 0.0,
        seed: int = 0,
        timeout_s: float = 30.0,
        faults: Sequence[str] | None = None,
        time_scale: float = 1.0,
        context_window: int | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(provider, model, price=price, timeout_s=timeout_s)
        p50, p95 = (float(v) for v in latency_ms)
        if p50 < 0 or p95 < p50:
            raise InvalidInput(f"latency_ms must satisfy 0 <= p50 <= p95, got p50={p50:g} p95={p95:g}")
        if not 0.0 <= failure_rate <= 1.0:
            raise InvalidInput(f"failure_rate must be between 0 and 1, got {failure_rate!r}")
        if not time_scale >= 0:
            raise InvalidInput(f"time_scale must be >= 0, got {time_scale!r}")
        kinds = tuple(faults) if faults is not None else tuple(FAULT_KINDS)
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds:
            raise InvalidInput(f"faults must be a non-empty subset of {sorted(FAULT_KINDS)}, got {list(kinds)}")
        if context_window is not None and context_window <= 0:
            raise InvalidInput(f"context_window must be positive, got {context_window!r}")
        self.latency_ms = (p50, p95)
        self.failure_rate = float(failure_rate)
        self.seed = seed
        self.faults = kinds
        self.time_scale = float(time_scale)
        self.context_window = context_window
        self.calls = 0
        """Upstream calls made (validated requests that reached the simulated vendor)."""
        self._sleep = sleep or asyncio.sleep
        self._script: deque[Outcome] = deque()  # consumed first, one per call
        self._sent: dict[str, int] = {}  # conversation digest -> times sent, for reproducible retries
        # log-normal parameters from the two quantiles (sigma 0 gives a constant latency)
        self._mu = math.log(p50) if p50 > 0 else -math.inf
        self._sigma = (math.log(p95) - math.log(p50)) / _Z95 if p50 > 0 else 0.0

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next calls, in order, before any random behaviour."""
        self._script.extend(outcomes)

    async def _complete(self, request: Request) -> Reply:
        plan = self._plan(request)
        await self._wait(plan, request)
        if plan.error is not None:
            raise plan.error
        return Reply(plan.text, self._usage(request, plan))

    async def _stream(self, request: Request) -> AsyncIterator[str | Usage]:
        plan = self._plan(request)
        await self._wait(plan, request)
        if plan.error is not None and plan.fail_after is None:
            raise plan.error
        for i, piece in enumerate(p for p in _PIECES.findall(plan.text) if p):
            if plan.error is not None and i == plan.fail_after:
                raise plan.error
            yield piece
            await asyncio.sleep(0)  # let other tasks run between chunks, as a socket read would
        if plan.error is not None:
            raise plan.error
        yield self._usage(request, plan)

    def _translate_error(self, exc: Exception) -> ProviderError | None:
        return None  # every failure here is already a ProviderError

    async def _probe(self, timeout_s: float) -> None:
        return None  # nothing to reach: the simulated vendor always exists

    def _usage(self, request: Request, plan: _Plan) -> Usage:
        input_tokens = estimate_messages_tokens(m.text for m in request.messages)
        return Usage(plan.finish_reason, input_tokens, estimate_tokens(plan.text))

    async def _wait(self, plan: _Plan, request: Request) -> None:
        if plan.latency_s > request.timeout_s:
            await self._sleep(request.timeout_s * self.time_scale)
            raise self._error(Timeout, f"no answer within {request.timeout_s:g}s (simulated)")
        await self._sleep(plan.latency_s * self.time_scale)

    def _plan(self, request: Request) -> _Plan:
        self.calls += 1
        digest = hashlib.blake2b(
            "\x1e".join(f"{m.role}\x1f{m.text}" for m in request.messages).encode(), digest_size=16
        ).hexdigest()
        sent = self._sent.get(digest, 0)
        self._sent[digest] = sent + 1
        rng = random.Random(f"{self.seed}:{digest}:{sent}")
        latency_s = self._draw_latency(rng)
        text, finish = self._reply_text(request, digest)
        if self._script:
            return self._scripted(self._script.popleft(), request, latency_s, text, finish)
        if self.context_window is not None:
            needed = estimate_messages_tokens(m.text for m in request.messages) + request.max_tokens
            if needed > self.context_window:
                err = self._error(
                    ContextTooLong, f"input needs {needed} tokens, context window is {self.context_window}", status=400
                )
                return _Plan(latency_s, "", finish, err, None)
        if self.failure_rate and rng.random() < self.failure_rate:
            kind = rng.choice(self.faults)
            return _Plan(latency_s, "", finish, self._fault(kind), None)
        return _Plan(latency_s, text, finish, None, None)

    def _scripted(self, outcome: Outcome, request: Request, latency_s: float, text: str, finish: str) -> _Plan:
        if isinstance(outcome, str):
            return _Plan(latency_s, outcome, "stop", None, None)
        if isinstance(outcome, MidStream):
            return _Plan(latency_s, text, finish, self._as_error(outcome.error), max(0, outcome.after_chunks))
        if isinstance(outcome, BaseException) or isinstance(outcome, type):
            return _Plan(latency_s, "", finish, self._as_error(outcome), None)
        try:
            produced = outcome(request)
        except Exception as exc:  # a scripted callable may fail like a vendor would
            return _Plan(latency_s, "", finish, exc, None)
        return _Plan(latency_s, produced, "stop", None, None)

    def _as_error(self, error: BaseException | type[ProviderError]) -> BaseException:
        if isinstance(error, type):
            return self._error(error, "scripted failure (simulated)")
        return error

    def _fault(self, kind: str) -> ProviderError:
        cls = FAULT_KINDS[kind]
        status = {"rate_limited": 429, "server_error": 500, "overloaded": 503}.get(kind)
        return self._error(
            cls, f"simulated {kind.replace('_', ' ')}", status=status, retry_after=1.0 if cls is RateLimited else None
        )

    def _draw_latency(self, rng: random.Random) -> float:
        if self._mu == -math.inf:
            return 0.0
        return math.exp(self._mu + self._sigma * rng.gauss(0.0, 1.0)) / 1000.0

    def _reply_text(self, request: Request, digest: str) -> tuple[str, str]:
        last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        words = random.Random(f"{self.seed}:{digest}").choices(_WORDS, k=8 + len(last_user.split()) // 4)
        head = " ".join(last_user.split()[:8])
        text = f"[{self.model}] re: {head} | " + " ".join(words)
        if estimate_tokens(text) <= request.max_tokens:
            return text, "stop"
        return text[: request.max_tokens * 4].rstrip(), "length"
