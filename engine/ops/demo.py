"""Run the demo workload through a real `Router` on simulated providers.

The router, the decision log, quotas, cache, health and fallback are the production code; only
the providers are simulated (`adapters.simulated`), and two things are sped up so that a run
takes seconds:

- provider latencies and retry backoffs are real sleeps multiplied by `time_scale`;
- the router's clock is a `VirtualClock` that jumps to each request's arrival time, so the
  workload spans tens of virtual minutes: health windows, circuit cooldowns, quota windows and
  log timestamps all live on that timeline (which ends now, so `engine stats --since 1h` sees it).

Faults are injected on the adapters themselves (the router is not told): every model of one
provider fails during the outage, and the burst's first-choice model answers part of its calls
with 429 during the burst. Phase changes are written to the log's `events` table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adapters.base import LLMAdapter, Price
from adapters.simulated import SimulatedAdapter
from engine.errors import EngineError, RequestError
from engine.ops.workload import DemoRequest, Phases, build_workload
from engine.policy.api import compile_policy
from engine.policy.model import Policy
from engine.routing.decide import decide
from engine.routing.features import Request
from engine.runtime.result import StreamDone
from engine.runtime.router import Router

__all__ = ["DemoResult", "VirtualClock", "demo_policy", "run_demo"]

FEEDBACK_LABEL = "simulated-grader"
"""Label of the feedback the demo sends (a stand-in for an app's own quality judgements)."""


class VirtualClock:
    """A clock the demo moves to each request's arrival time (never backwards).

    Args:
        start: wall-clock time (Unix seconds) of offset 0.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self._offset = 0.0

    def set(self, offset_s: float) -> None:
        """Move to `offset_s` seconds after the start (earlier values are ignored)."""
        self._offset = max(self._offset, offset_s)

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        return self.start + self._offset

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return 1_000_000.0 + self._offset


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """What a demo run did; the numbers to show come from its decision log.

    Attributes:
        db_path: the decision log written.
        requests: requests sent.
        wall_s: real time the run took.
        start_ts: virtual time of the first arrival; end_ts: of the last.
        outage_provider: the provider that failed during the outage, and outage_models its models.
        burst_model: the model that answered 429 during the burst.
        outcomes: what the callers saw, per kind of result (ok, cached, and engine error class names).
        feedback: feedback rows sent.
        time_scale: multiplier of simulated latencies and backoffs.
    """

    db_path: Path
    requests: int
    wall_s: float
    start_ts: float
    end_ts: float
    outage_provider: str
    outage_models: tuple[str, ...]
    burst_model: str | None
    outcomes: Mapping[str, int] = field(default_factory=dict)
    feedback: int = 0
    time_scale: float = 1.0


def demo_policy(policy: Policy, time_scale: float) -> Policy:
    """`policy` with every simulated latency and retry backoff multiplied by `time_scale`.

    Raises:
        ValueError: a provider is not simulated (the demo never calls a real vendor).
    """
    real = sorted(name for name, p in policy.providers.items() if p.adapter != "simulated")
    if real:
        raise ValueError(f"the demo runs offline on simulated providers only; {', '.join(real)} "
                         "would call a vendor: use the bundled default policy or a simulated copy")
    providers = {name: dataclasses.replace(p, options={**p.options, "time_scale": time_scale})
                 for name, p in policy.providers.items()}
    retry = dataclasses.replace(policy.retry, backoff_ms=policy.retry.backoff_ms * time_scale,
                                max_backoff_ms=policy.retry.max_backoff_ms * time_scale)
    return dataclasses.replace(policy, providers=providers, retry=retry)


def _adapters(policy: Policy) -> dict[str, SimulatedAdapter]:
    from adapters.registry import build_adapter

    out: dict[str, SimulatedAdapter] = {}
    for name, m in policy.models.items():
        p = policy.providers[m.provider]
        a = build_adapter(p.adapter, provider=p.name, model=m.id, timeout_s=p.timeout_s,
                          price=Price(m.price.input, m.price.output), options=p.options)
        assert isinstance(a, SimulatedAdapter)
        out[name] = a
    return out


def _targets(policy: Policy, workload: Sequence[DemoRequest], phases: Phases) -> tuple[str, str | None]:
    """The provider whose outage hurts most (first choice of most requests) and the burst's model."""
    compiled = compile_policy(policy)
    first: Counter[str] = Counter()
    burst: Counter[str] = Counter()
    for r in workload:
        if r.kind in ("bad", "long_doc", "review"):
            continue
        d = decide(compiled, Request.of(r.prompt(), max_tokens=r.max_tokens, temperature=r.temperature,
                                        stream=r.stream, meta=r.meta, **r.surface))
        if d.model is None:
            continue
        first[policy.models[d.model].provider] += 1
        if r.index in phases.burst:
            burst[d.model] += 1
    provider = first.most_common(1)[0][0] if first else next(iter(policy.providers))
    return provider, (burst.most_common(1)[0][0] if burst else None)


def _timeline_start(span_s: float, now: float) -> float:
    """Start so the run ends now; a run that would cross UTC midnight ends just before it instead,
    so that daily quota windows do not reset half-way (the story must not depend on the hour)."""
    start = now - span_s - 1.0
    midnight = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).replace(hour=0, minute=0, second=0,
                                                                            microsecond=0).timestamp()
    if start < midnight:
        start = midnight - span_s - 60.0
    return start


async def run_demo(policy: Policy, out_dir: str | Path, *, requests: int = 2000, concurrency: int = 32,
                   time_scale: float = 0.02, seed: int = 7, feedback_rate: float = 0.25,
                   on_progress: Callable[[int, int], None] | None = None, now: float | None = None) -> DemoResult:
    """Drive the demo workload through a `Router` and write `out_dir/decisions.db`.

    Args:
        policy: a policy whose providers are all simulated (the bundled default policy).
        out_dir: folder for the decision log (created; an old `decisions.db` there is replaced).
        requests: how many requests to send (at least 20).
        concurrency: requests in flight at once.
        time_scale: multiplier of simulated latencies and retry backoffs (0: as fast as possible).
        seed: seed of the workload, of the simulated providers' draws and of the feedback.
        feedback_rate: share of served requests that get a (simulated) feedback score.
        on_progress: called with (done, total) after each request.
        now: where the virtual timeline ends (default: the current time).

    Raises:
        ValueError: a provider is not simulated, or a bad count.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    policy = demo_policy(policy, time_scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "decisions.db"
    for stale in (db_path, out / "decisions.db-wal", out / "decisions.db-shm"):
        stale.unlink(missing_ok=True)
    workload = build_workload(requests, seed=seed)
    phases = Phases(requests)
    outage_provider, burst_model = _targets(policy, workload, phases)
    adapters = _adapters(policy)
    outage_models = tuple(n for n, m in policy.models.items() if m.provider == outage_provider)
    clock = VirtualClock(_timeline_start(workload[-1].at_s, time.time() if now is None else now))
    overrides: dict[str, LLMAdapter] = dict(adapters)
    router = Router(policy, log_path=db_path, adapters=overrides, clock=clock)
    run = _Run(router, policy, seed, feedback_rate, on_progress, len(workload))
    faults = _Faults(router, adapters, phases, outage_provider, outage_models, burst_model)
    t0 = time.perf_counter()
    try:
        sem = asyncio.Semaphore(concurrency)
        tasks: list[asyncio.Task[None]] = []
        for r in workload:
            await sem.acquire()
            clock.set(r.at_s)
            faults.at(r.index)
            tasks.append(asyncio.create_task(run.one(r, sem)))
        await asyncio.gather(*tasks)
    finally:
        await router.aclose()
    return DemoResult(db_path=db_path, requests=len(workload), wall_s=time.perf_counter() - t0,
                      start_ts=clock.start + workload[0].at_s, end_ts=clock.start + workload[-1].at_s,
                      outage_provider=outage_provider, outage_models=outage_models, burst_model=burst_model,
                      outcomes=dict(run.outcomes), feedback=run.feedback, time_scale=time_scale)


class _Faults:
    """Starts and ends the outage and the burst on the adapters, and notes each change in the log."""

    def __init__(self, router: Router, adapters: Mapping[str, SimulatedAdapter], phases: Phases,
                 outage_provider: str, outage_models: Sequence[str], burst_model: str | None) -> None:
        self.router = router
        self.adapters = adapters
        self.phases = phases
        self.outage_provider = outage_provider
        self.outage_models = tuple(outage_models)
        self.burst_model = burst_model
        self._saved: dict[str, tuple[float, tuple[str, ...]]] = {}  # model -> (failure_rate, faults) before

    def at(self, i: int) -> None:
        """Apply the phase changes due before request `i` is sent."""
        if i == self.phases.outage.start:
            self._inject(self.outage_models, 1.0, ("server_error", "overloaded"))
            self.router.recorder.event("demo_outage_started",
                                       f"every call to {self.outage_provider} fails (simulated outage)")
        elif i == self.phases.outage.stop:
            self._restore(self.outage_models)
            self.router.recorder.event("demo_outage_ended", f"{self.outage_provider} answers again")
        if self.burst_model is None:
            return
        if i == self.phases.burst.start:
            self._inject((self.burst_model,), 0.5, ("rate_limited",))
            self.router.recorder.event("demo_burst_started",
                                       f"support chat x10; {self.burst_model} answers half its calls with 429",
                                       model=self.burst_model)
        elif i == self.phases.burst.stop:
            self._restore((self.burst_model,))
            self.router.recorder.event("demo_burst_ended", "traffic back to normal", model=self.burst_model)

    def _inject(self, models: Sequence[str], rate: float, faults: tuple[str, ...]) -> None:
        for name in models:
            a = self.adapters[name]
            self._saved.setdefault(name, (a.failure_rate, a.faults))
            a.failure_rate, a.faults = rate, faults

    def _restore(self, models: Sequence[str]) -> None:
        for name in models:
            if name in self._saved:
                a = self.adapters[name]
                a.failure_rate, a.faults = self._saved.pop(name)


class _Run:
    """Sends one request at a time for the loop in `run_demo`, and counts what came back."""

    def __init__(self, router: Router, policy: Policy, seed: int, feedback_rate: float,
                 on_progress: Callable[[int, int], None] | None, total: int) -> None:
        self.router = router
        self.policy = policy
        self.seed = seed
        self.feedback_rate = feedback_rate
        self.on_progress = on_progress
        self.total = total
        self.done = 0
        self.feedback = 0
        self.outcomes: Counter[str] = Counter()

    async def one(self, r: DemoRequest, sem: asyncio.Semaphore) -> None:
        try:
            result = None
            try:
                if r.stream:
                    async for event in self.router.stream(r.prompt(), max_tokens=r.max_tokens,
                                                          temperature=r.temperature, meta=r.meta, **r.surface):
                        if isinstance(event, StreamDone):
                            result = event.result
                else:
                    result = await self.router.generate(r.prompt(), max_tokens=r.max_tokens,
                                                        temperature=r.temperature, meta=r.meta, **r.surface)
            except (EngineError, RequestError) as e:
                self.outcomes[type(e).__name__] += 1
            if result is not None:
                self.outcomes["cached" if result.cached else "ok"] += 1
                self._grade(r, result.request_id, result.model, result.query_type)
        finally:
            sem.release()
            self.done += 1
            if self.on_progress is not None:
                self.on_progress(self.done, self.total)

    def _grade(self, r: DemoRequest, request_id: str, model: str, query_type: str) -> None:
        """A simulated grader: the model's policy score for the query type, plus noise."""
        rng = random.Random(f"{self.seed}:feedback:{r.index}")
        if rng.random() >= self.feedback_rate:
            return
        base = self.policy.models[model].score(query_type) or 3
        score = float(min(5, max(1, round(base + rng.gauss(0.0, 0.8)))))
        self.router.feedback(request_id, score, FEEDBACK_LABEL)
        self.feedback += 1
