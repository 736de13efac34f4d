"""An offline provider with deterministic latency, text and failures, for demos and chaos tests.

It is a real adapter: validation, timing, error classes and cost go through the same base
flow as the vendor adapters. Outcomes are reproducible: the text depends only on the seed and
the conversation; latency and random failures on the seed, the conversation and how many
times that conversation was sent before (so a retry draws afresh, and a rerun repeats).

The request surface follows the fakes' rules (tests/fakes/surface.py), so tests agree:

    tools offered, tool_choice not none, last turn not a tool result
        -> calls the first tool (or the named one), or the first two when the last user text
           says "parallel" (parallel_tool_calls not false, >= 2 tools); arguments built from
           the tool's schema (`sample_for_schema`)
    last turn a tool result      -> "Tool <name> returned: <result text>"
    json_object / json_schema    -> {"echo": <last user text>} / an object valid for the schema
    images                       -> the text ends with " [images: N]"
    stop sequences               -> the text ends before the first one

Which of that a model has is data (`features`): a model without `tools`, `json`, `vision` or
`streaming` refuses such a request with `BadRequest` before the call, as a vendor would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.base import LLMAdapter, Price, Reply, Request, StreamEvent, Usage
from adapters.conversation import ToolCall, ToolCallDelta, synth_call_id
from adapters.errors import (
    BadRequest,
    ContextTooLong,
    InvalidInput,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)
from adapters.tokens import estimate_messages_tokens, estimate_tokens

__all__ = ["FAULT_KINDS", "FEATURES", "MidStream", "Outcome", "SimulatedAdapter", "sample_for_schema"]

FEATURES: dict[str, frozenset[str]] = {
    "tools": frozenset({"tools", "tool_choice", "parallel_tool_calls"}),
    "json": frozenset({"response_format"}),
    "vision": frozenset(),
    "streaming": frozenset(),
}
"""A simulated model's features (the policy's names) and the request options each one lets in."""
_ALWAYS = frozenset({"top_p", "seed", "presence_penalty", "frequency_penalty", "user", "metadata"})
_PARALLEL = re.compile(r"\bparallel\b", re.I)

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
    calls: tuple[ToolCall, ...] = ()


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
        features: What the model can do, from `FEATURES` (tools, json, vision, streaming); a
            request needing another is refused before the call. Default: all of them.
        sleep: Coroutine used to wait, injectable for tests (default `asyncio.sleep`).
    """

    kind = "simulated"
    keeps_deadline = True  # a drawn latency past the timeout sleeps the timeout, then raises Timeout

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
        features: Collection[str] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(provider, model, price=price, timeout_s=timeout_s)
        if isinstance(features, str):
            raise InvalidInput(f"features must be a list of {', '.join(FEATURES)}, got {features!r}")
        have = frozenset(FEATURES) if features is None else frozenset(features)
        unknown = sorted(have - set(FEATURES))
        if unknown:
            raise InvalidInput(f"unknown feature(s) {', '.join(unknown)} for simulated model {model!r}; "
                               f"known: {', '.join(FEATURES)}")
        self.features = have
        self.supported_options = _ALWAYS.union(*(FEATURES[f] for f in have))
        self.supports_images = "vision" in have
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

    def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[StreamEvent]:
        """As `LLMAdapter.stream`; a model without the `streaming` feature refuses before the call."""
        if "streaming" not in self.features:
            raise self._error(BadRequest, f"streaming is not supported by simulated model {self.model}")
        return super().stream(*args, **kwargs)

    async def _complete(self, request: Request) -> Reply:
        plan = self._plan(request)
        await self._wait(plan, request)
        if plan.error is not None:
            raise plan.error
        return Reply(plan.text, self._usage(request, plan), plan.calls)

    async def _stream(self, request: Request) -> AsyncIterator[str | ToolCallDelta | Usage]:
        plan = self._plan(request)
        await self._wait(plan, request)
        if plan.error is not None and plan.fail_after is None:
            raise plan.error
        items: list[str | ToolCallDelta] = [p for p in _PIECES.findall(plan.text) if p]
        for i, call in enumerate(plan.calls):
            half = max(1, len(call.arguments) // 2)  # arguments arrive in pieces, as vendors stream them
            items += [ToolCallDelta(i, call.id, call.name, ""), ToolCallDelta(i, arguments=call.arguments[:half]),
                      ToolCallDelta(i, arguments=call.arguments[half:])]
        for i, item in enumerate(items):
            if plan.error is not None and i == plan.fail_after:
                raise plan.error
            yield item
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
        output = estimate_tokens(plan.text) + sum(estimate_tokens(c.name + c.arguments) for c in plan.calls)
        return Usage(plan.finish_reason, input_tokens, output)

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
        calls = _tool_calls(request, digest)
        text, finish = ("", "tool_calls") if calls else self._reply_text(request, digest)
        if self._script:
            return self._scripted(self._script.popleft(), request, latency_s, text, finish, calls)
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
        return _Plan(latency_s, text, finish, None, None, calls)

    def _scripted(self, outcome: Outcome, request: Request, latency_s: float, text: str, finish: str,
                  calls: tuple[ToolCall, ...]) -> _Plan:
        if isinstance(outcome, str):
            return _Plan(latency_s, outcome, "stop", None, None)
        if isinstance(outcome, MidStream):
            return _Plan(latency_s, text, finish, self._as_error(outcome.error), max(0, outcome.after_chunks), calls)
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
        output = request.options.output
        last = request.messages[-1]
        if last.role == "tool":
            text = f"Tool {_tool_name(request, last.tool_call_id, last.name)} returned: {last.text}"
        elif output is not None and output.type == "json_object":
            text = _json({"echo": last_user})
        elif output is not None and output.type == "json_schema":
            text = _json(sample_for_schema(output.schema))
        else:
            words = random.Random(f"{self.seed}:{digest}").choices(_WORDS, k=8 + len(last_user.split()) // 4)
            head = " ".join(last_user.split()[:8])
            text = f"[{self.model}] re: {head} | " + " ".join(words)
        images = sum(len(m.images) for m in request.messages)
        if images:
            text += f" [images: {images}]"
        cut = min((i for i in (text.find(s) for s in request.stop) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        if estimate_tokens(text) <= request.max_tokens:
            return text, "stop"
        return text[: request.max_tokens * 4].rstrip(), "length"


def _tool_calls(request: Request, digest: str) -> tuple[ToolCall, ...]:
    """The calls the simulated model makes: none, the first (or forced) tool, or the first two."""
    opts = request.options
    if not opts.tools or (opts.tool_choice is not None and opts.tool_choice.mode == "none"):
        return ()
    if request.messages[-1].role == "tool":
        return ()
    if opts.tool_choice is not None and opts.tool_choice.mode == "tool":
        chosen = [t for t in opts.tools if t.name == opts.tool_choice.name][:1]
    else:
        last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        many = _PARALLEL.search(last_user) and opts.parallel_tool_calls is not False and len(opts.tools) >= 2
        chosen = list(opts.tools[:2] if many else opts.tools[:1])
    return tuple(ToolCall(synth_call_id(t.name, i, digest), t.name, _json(sample_for_schema(t.parameters)))
                 for i, t in enumerate(chosen))


def _tool_name(request: Request, call_id: str | None, given: str | None) -> str:
    if given:
        return given
    return next((c.name for m in request.messages for c in m.tool_calls if c.id == call_id), "")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sample_for_schema(schema: Mapping[str, Any] | None, defs: Mapping[str, Any] | None = None) -> Any:
    """A value valid for a JSON Schema, deterministically: an object schema gives a dict.

    Every property in `required` (else every property); string "x" (or the first `enum`
    value, or a `const`), integer 1, number 1.5, boolean true, array [], object {} recursing
    into nested `properties`; local `$ref`s are followed and the first non-null branch of
    `anyOf`/`oneOf`/`allOf` taken (pydantic's schemas use both).
    """
    if not isinstance(schema, Mapping):
        return {}
    root = defs if defs is not None else {**schema.get("definitions", {}), **schema.get("$defs", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return sample_for_schema(root.get(ref.rsplit("/", 1)[-1], {}), root)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            pick = next((b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")), branches[0])
            return sample_for_schema(pick, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    scalar = {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "null": None}
    if kind in scalar:
        return scalar[kind]
    if kind == "array":
        return []
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    required = schema.get("required")
    names = [n for n in required if n in props] if isinstance(required, list) and required else list(props)
    return {n: sample_for_schema(props[n], root) for n in names}
