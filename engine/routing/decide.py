"""`decide`: the pure function from (compiled policy, request, runtime state) to a plan.

No I/O, no clock and no unseeded randomness (the order inside a model group is drawn from a
generator seeded by the request id): `engine explain`, `engine replay` and live traffic call the
same function, so what ops see in a dry run is what traffic gets. The steps are those of the
"Decision" section of docs/policy.md, in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.policy.compile import CompiledPolicy, CompiledRoute
from engine.policy.model import Group, Model
from engine.routing.features import Features, Request
from engine.routing.state import EMPTY_STATE, RuntimeState
from engine.routing.tokens import PromptTokens, unavailable_reason

Op = Literal["enter", "match", "skip", "fail", "note", "fallback", "select"]
_Row = tuple[Model, int, float, "str | None", str]
"""(model, score for the query type, estimated cost, why it is excluded or None, candidate|fallback)"""


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One step of a decision, mapped back to the YAML path it comes from."""

    op: Op
    node: str
    message: str

    def format(self) -> str:
        """`op node: message`."""
        return f"{self.op:<8} {self.node}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """How one model fared for this request."""

    model: str
    provider: str
    eligible: bool
    score: int
    est_cost_usd: float
    reason: str | None = None
    role: Literal["candidate", "fallback"] = "candidate"
    prompt_tokens: int = 0
    """The prompt size this model was checked and priced with."""
    tokens_by: str = "estimate"
    """What counted it: `estimate`, `stated`, or an encoding (`cl100k_base via tiktoken`)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON view (explain --json)."""
        d: dict[str, Any] = {"model": self.model, "provider": self.provider, "eligible": self.eligible,
                             "score": self.score, "est_cost_usd": round(self.est_cost_usd, 8), "role": self.role,
                             "prompt_tokens": self.prompt_tokens, "tokens_by": self.tokens_by}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the policy decided for one request.

    Attributes:
        route: name of the matching route (None if no route matched).
        query_type: the classified query type.
        plan: models to try, in order (ranked candidates, then fallbacks, demoted last).
        rows: every model considered as (model, score, est. cost, reason or None, role);
            `candidates` gives them as `Candidate` objects.
        features: the request features expressions saw.
        trace: the steps taken (empty unless `explain=True`).
        refusal: why the request is refused when the plan is empty.
        quota_refused: the plan is empty because `reject` quotas excluded every model.
        downgraded: a `downgrade` quota replaced the plan with the cheapest model of the route
            that fits.
        policy_digest: which policy version decided.
        downgrade_reach: with the trace on and `downgrade` quotas in the policy, the models a
            downgrade could switch this route to (cheapest first).
        would_downgrade_to: likewise, what a downgrade would pick for this request now (None: nothing fits).
    """

    route: str | None
    query_type: str
    plan: tuple[str, ...]
    rows: tuple[_Row, ...]
    features: Features
    trace: tuple[TraceEvent, ...] = ()
    refusal: str | None = None
    quota_refused: bool = False
    downgraded: bool = False
    policy_digest: str = ""
    downgrade_reach: tuple[str, ...] | None = None
    would_downgrade_to: str | None = None

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """Every model considered, with eligibility, score and estimated cost (built on demand:
        live traffic never pays for these objects)."""
        f = self.features
        return tuple(Candidate(model=m.name, provider=m.provider, eligible=reason is None, score=score,
                               est_cost_usd=cost, reason=reason, role=role,  # type: ignore[arg-type]
                               prompt_tokens=f.prompt_tokens_for(m), tokens_by=f.tokens_source(m))
                     for m, score, cost, reason, role in self.rows)

    @property
    def model(self) -> str | None:
        """The first model of the plan, or None when refused."""
        return self.plan[0] if self.plan else None

    def as_dict(self) -> dict[str, Any]:
        """The `engine explain --json` object (POLICY.md)."""
        return {
            "route": self.route, "query_type": self.query_type, "model": self.model, "plan": list(self.plan),
            "candidates": [c.as_dict() for c in self.candidates], "features": self.features.as_dict(),
            "refusal": self.refusal, "downgraded": self.downgraded,
            "trace": [e.format() for e in self.trace], "policy": self.policy_digest[:12],
            **({"downgrade": {"reach": list(self.downgrade_reach), "would_pick": self.would_downgrade_to}}
               if self.downgrade_reach is not None else {}),
        }


@dataclass(slots=True)
class _Tracer:
    on: bool
    events: list[TraceEvent] = field(default_factory=list)

    def __call__(self, op: Op, node: str, message: str) -> None:
        if self.on:
            self.events.append(TraceEvent(op, node, message))


def decide(compiled: CompiledPolicy, request: Request, state: RuntimeState = EMPTY_STATE, *,
           explain: bool = False, naive: bool = False) -> Decision:
    """Decide the plan for `request`.

    Args:
        compiled: the compiled policy.
        request: the caller's request.
        state: health, limiter and quota facts (EMPTY_STATE for a dry run).
        explain: record a human-readable trace (costs a little; off for live traffic).
        naive: match routes by evaluating every `when` in order instead of walking the tree
            (the reference semantics, used by tests and benchmarks).
    """
    features = compiled.features(request)
    return decide_features(compiled, features, state, explain=explain, naive=naive)


def decide_features(compiled: CompiledPolicy, features: Features, state: RuntimeState = EMPTY_STATE, *,
                    explain: bool = False, naive: bool = False) -> Decision:
    """`decide` from already computed features (used by replay and benchmarks)."""
    t = _Tracer(explain)
    if explain:
        t("note", "$.query_types", f"query type {features.query_type!r}; prompt ~{features.prompt_tokens} tokens, "
                                   f"max_tokens {features.max_tokens}")
        on = [k for k, v in features.signals.items() if v]
        if compiled.signals:
            t("note", "$.signals", f"signals true: {', '.join(on) or 'none'}")
    env = features.env()
    cr = compiled.match_naive(env) if naive else compiled.match(env)
    if cr is None:
        t("fail", "$.routes", "no route matched")
        return Decision(route=None, query_type=features.query_type, plan=(), rows=(), features=features,
                        trace=tuple(t.events), refusal="no route matched this request",
                        policy_digest=compiled.policy.digest)
    node = f"$.routes[{cr.route.index}]"
    t("match", node, f"route {cr.route.name!r}" + (f" (when: {cr.when.text})" if cr.when else " (no condition)"))
    return _plan(compiled, cr, features, state, t, node)


def decide_route(compiled: CompiledPolicy, route: str, features: Features, state: RuntimeState = EMPTY_STATE, *,
                 explain: bool = False) -> Decision | None:
    """The plan of the named route for these features, whatever its `when` says (a caller
    pinning a route); None when the policy has no such route."""
    for cr in compiled.routes:
        if cr.route.name == route:
            return _plan(compiled, cr, features, state, _Tracer(explain), f"$.routes[{cr.route.index}]")
    return None


def decide_group(compiled: CompiledPolicy, group: str, decision: Decision, state: RuntimeState = EMPTY_STATE, *,
                 explain: bool = False) -> Decision | None:
    """`decision` re-planned for a caller pinning model group `group`: its members that fit
    (context, needed features, circuit, limits, quotas), in the group's order; None when the
    policy has no such group."""
    g = compiled.policy.groups.get(group)
    if g is None:
        return None
    t = _Tracer(explain)
    f = decision.features
    mt = f.max_tokens
    rows: list[_Row] = []
    fits: list[str] = []
    blocked: list[tuple[str, bool]] = []
    members = [compiled.policy.models[name] for name in g.models]
    if f.tokens is not None:
        f.tokens.settle(members, mt)
    for m in members:
        name = m.name
        pt = f.prompt_tokens_for(m)
        cost = m.est_cost(pt, mt)
        reason = _runtime_miss(m, pt + mt, cost, f, state, blocked)
        rows.append((m, m.score(f.query_type), cost, reason, "candidate"))
        if reason is None:
            fits.append(name)
        else:
            t("skip", f"$.models.{name}", reason)
    plan = group_order(g, fits, f.request_id, state, compiled.policy.models)
    t("select", f"$.groups.{group}", f"pinned group {group!r}, {g.strategy}: {', '.join(plan) or 'none fits'}")
    refusal = None
    if not plan:
        why = "; ".join(f"{m.name}: {r}" for m, _, _, r, _ in rows if r)
        refusal = f"group {group!r} leaves no model for this request ({why})"
    return dataclasses.replace(decision, plan=tuple(plan), rows=tuple(rows), trace=decision.trace + tuple(t.events),
                               refusal=refusal, quota_refused=bool(blocked) and not plan, downgraded=False)


def _plan(compiled: CompiledPolicy, cr: CompiledRoute, f: Features, state: RuntimeState, t: _Tracer,
          node: str) -> Decision:
    route = cr.route
    pt, mt = f.prompt_tokens, f.max_tokens
    on = t.on
    rows: list[_Row] = []
    eligible: list[tuple[Model, float, int]] = []
    quota_blocked: list[tuple[str, bool]] = []
    ceiling = route.max_cost_usd
    max_p95 = route.require.max_p95_ms
    tokens = _count_exactly(cr, f, ceiling, t)
    for m, score, static_miss in cr.static_for(f.query_type):
        price = m.price
        mpt = pt if tokens is None or m.tokenizer is None else tokens.used(m.tokenizer)
        need = mpt + mt
        cost = (mpt * price.input + mt * price.output) / 1_000_000
        reason = static_miss
        if reason is None and max_p95 is not None:
            p95 = _latency(m, state)[1]
            if p95 is not None and p95 > max_p95:
                reason = f"p95 latency {p95:.0f} ms > max_p95_ms {max_p95:g}"
        if reason is None:
            reason = _runtime_miss(m, need, cost, f, state, quota_blocked)
        if reason is None and ceiling is not None and cost > ceiling:
            reason = f"estimated cost ${cost:.6f} > max_cost_usd ${ceiling:g}"
        rows.append((m, score, cost, reason, "candidate"))
        if reason is None:
            eligible.append((m, cost, score))
            if on:
                t("enter", f"$.models.{m.name}", f"eligible: score {score}, est ${cost:.6f}")
        elif on:
            t("skip", f"$.models.{m.name}", reason)
    plan = _rank(route.strategy, eligible, state)
    if plan and on:
        t("select", f"{node}.strategy", f"{route.strategy}: {', '.join(plan)}")
    _fallbacks(cr, f, state, plan, rows, quota_blocked, t, node)
    if compiled.group_of and len(plan) > 1:
        plan = _grouped(compiled, plan, f, state, t)
    if state.demoted and plan:
        plan = _demote(plan, state, t)
    downgraded = False
    if not plan and quota_blocked and any(down for _, down in quota_blocked):
        pick = _downgrade(cr, f, state)
        if pick is not None:
            plan, downgraded = [pick.name], True
            t("fallback", f"{node}.downgrade_to" if route.downgrade_to is not None else "$.quotas",
              f"downgrade: {pick.name} is the cheapest of the route's models that fits the quotas")
        else:
            t("fail", "$.quotas", "downgrade: none of the route's models fits the quotas "
              f"({', '.join(m.name for m in cr.downgrade) or 'none'})")
    reach, would = _downgrade_view(compiled, cr, f, state, plan if downgraded else None) if on else (None, None)
    refusal = None
    quota_refused = False
    if not plan:
        reasons = {r[0].name: r[3] for r in reversed(rows) if r[3]}  # a model listed twice: its first reason
        why = "; ".join(f"{name}: {reasons[name]}" for name in dict.fromkeys(r[0].name for r in rows)
                        if name in reasons) or "the route has no models"
        refusal = f"route {route.name!r} leaves no model for this request ({why})"
        # a quota is the one exclusion the caller can act on (wait for the reset): name it
        quota_refused = bool(quota_blocked)
        t("fail", node, refusal)
    return Decision(route=route.name, query_type=f.query_type, plan=tuple(plan), rows=tuple(rows), features=f,
                    trace=tuple(t.events), refusal=refusal, quota_refused=quota_refused, downgraded=downgraded,
                    policy_digest=compiled.policy.digest, downgrade_reach=reach, would_downgrade_to=would)


def _count_exactly(cr: CompiledRoute, f: Features, ceiling: float | None, t: _Tracer) -> PromptTokens | None:
    """Count the prompt exactly for the route's encodings whose window or cost ceiling the
    estimate may decide wrongly (`PromptTokens.settle`), and say so in the trace. Returns
    `f.tokens` when some model now has an exact count, else None (every model uses the estimate)."""
    tokens = f.tokens
    if tokens is None or cr.tokenized is None:
        return None
    tokens.settle_route(cr.tokenized, f.max_tokens, ceiling)
    if t.on:
        for enc, n in tokens.counted.items():
            t("note", "$.models", f"prompt counted with {enc}: {n} tokens (estimate {f.prompt_tokens})"
              if n is not None else f"{enc} cannot count the prompt ({unavailable_reason(enc)}): the estimate stands")
    return tokens if tokens.any_exact else None


def _demote(plan: list[str], state: RuntimeState, t: _Tracer) -> list[str]:
    kept = [p for p in plan if p not in state.demoted]
    demoted = [p for p in plan if p in state.demoted]
    for p in demoted:
        t("note", "$.health.demote", f"{p} moved to the end: {state.demoted[p]}")
    return kept + demoted


def _fallbacks(cr: CompiledRoute, f: Features, state: RuntimeState, plan: list[str], rows: list[_Row],
               quota_blocked: list[tuple[str, bool]], t: _Tracer, node: str) -> None:
    """Append the route's fallbacks that still fit (window, circuit, limits, quota) to `plan`."""
    pt, mt = f.prompt_tokens, f.max_tokens
    exact = f.tokens is not None and f.tokens.any_exact
    for m in cr.fallback:
        if m.name in plan:
            continue
        if exact:
            pt = f.prompt_tokens_for(m)
        cost = (pt * m.price.input + mt * m.price.output) / 1_000_000
        reason = _runtime_miss(m, pt + mt, cost, f, state, quota_blocked)
        rows.append((m, m.score(f.query_type), cost, reason, "fallback"))
        if reason is None:
            plan.append(m.name)
            if t.on:
                t("fallback", f"{node}.fallback", f"{m.name} appended")
        elif t.on:
            t("skip", f"{node}.fallback", f"{m.name}: {reason}")


def _runtime_miss(m: Model, need: int, cost: float, f: Features, state: RuntimeState,
                  quota_blocked: list[tuple[str, bool]]) -> str | None:
    if f.needs and m.features_declared and not f.needs <= m.features:
        return f"lacks {', '.join(sorted(f.needs - m.features))}"
    if need > m.context_window:
        return f"context window {m.context_window} < {need} tokens (prompt {need - f.max_tokens} + max_tokens)"
    if m.max_output_tokens is not None and f.max_tokens > m.max_output_tokens:
        return f"max_tokens {f.max_tokens} > max_output_tokens {m.max_output_tokens}"
    if m.name in state.open_circuits:
        why = state.open_circuits[m.name]
        # the health tracker's reasons already say so; the reason is said once
        return why if why.startswith("circuit open") else f"circuit open: {why}"
    if m.name in state.unavailable:
        return f"unavailable: {state.unavailable[m.name]}"
    if state.quota_probe is not None:
        verdict = state.quota_probe(m.name, need, cost)
        if verdict is not None:
            quota_blocked.append(verdict)
            return f"quota: {verdict[0]}"
    return None


def _latency(m: Model, state: RuntimeState) -> tuple[float | None, float | None]:
    measured = state.latency_ms.get(m.name)
    if measured is not None:
        return measured
    if m.latency is not None:
        return m.latency.p50_ms, m.latency.p95_ms
    return None, None


def _rank(strategy: str, eligible: list[tuple[Model, float, int]], state: RuntimeState) -> list[str]:
    if strategy == "ordered":
        return [m.name for m, _, _ in eligible]
    key: Callable[[tuple[Model, float, int]], tuple[float, ...]]
    if strategy == "cheapest":
        def key(e: tuple[Model, float, int]) -> tuple[float, ...]:
            return (e[1], e[0].order)
    elif strategy == "fastest":
        def key(e: tuple[Model, float, int]) -> tuple[float, ...]:
            p50 = _latency(e[0], state)[0]
            return (p50 if p50 is not None else float("inf"), e[1], e[0].order)
    elif strategy == "largest_context":
        def key(e: tuple[Model, float, int]) -> tuple[float, ...]:
            return (-e[0].context_window, e[1], e[0].order)
    else:  # best
        def key(e: tuple[Model, float, int]) -> tuple[float, ...]:
            return (-e[2], e[1], e[0].order)
    return [m.name for m, _, _ in sorted(eligible, key=key)]


def _downgrade_view(compiled: CompiledPolicy, cr: CompiledRoute, f: Features, state: RuntimeState,
                    downgraded: list[str] | None) -> tuple[tuple[str, ...] | None, str | None]:
    """For explain: the models a downgrade can reach and what it would pick now if a `downgrade`
    quota tripped (the same search as live traffic, on the same state)."""
    if not compiled.downgrades:
        return None, None
    reach = tuple(m.name for m in cr.downgrade)
    if downgraded:
        return reach, downgraded[0]
    pick = _downgrade(cr, f, state)
    return reach, (pick.name if pick is not None else None)


def _downgrade(cr: CompiledRoute, f: Features, state: RuntimeState) -> Model | None:
    """The cheapest of the route's downgrade models (its `downgrade_to`, else its candidates and
    fallbacks) that passes the runtime checks: a downgrade never leaves the route."""
    mt = f.max_tokens
    for m in sorted(cr.downgrade, key=lambda m: (m.est_cost(f.prompt_tokens_for(m), mt), m.order)):
        pt = f.prompt_tokens_for(m)
        if _runtime_miss(m, pt + mt, m.est_cost(pt, mt), f, state, []) is None:
            return m
    return None


def _grouped(compiled: CompiledPolicy, plan: list[str], f: Features, state: RuntimeState, t: _Tracer) -> list[str]:
    """Members of one group kept together, at the rank of the first of them, in the group's order."""
    group_of = compiled.group_of
    out: list[str] = []
    done: set[str] = set()
    for name in plan:
        g = group_of.get(name)
        if g is None:
            out.append(name)
        elif g.name not in done:
            done.add(g.name)
            members = [m for m in plan if group_of.get(m) is g]
            ordered = group_order(g, members, f.request_id, state, compiled.policy.models)
            if t.on:
                t("select", f"$.groups.{g.name}", f"{g.strategy}: {', '.join(ordered)}")
            out.extend(ordered)
    return out


def group_order(g: Group, members: Sequence[str], request_id: str, state: RuntimeState,
                models: Mapping[str, Model]) -> list[str]:
    """`members` of group `g` in the order the group's strategy gives this request.

    `weighted` and `shuffle` draw from a generator seeded by (request id, group name), so the
    same request id always gets the same order; `least_busy` and `lowest_latency` read `state`.
    """
    rank = {m: i for i, m in enumerate(g.models)}
    base = sorted(members, key=lambda m: rank.get(m, len(rank)))
    if g.strategy in ("weighted", "shuffle"):
        digest = hashlib.blake2b(f"{request_id}\0{g.name}".encode(), digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        # weighted sampling without replacement (Efraimidis-Spirakis): key u^(1/w), largest first
        keys = {m: rng.random() ** (1.0 / (g.weight(m) if g.strategy == "weighted" else 1.0)) for m in base}
        return sorted(base, key=lambda m: -keys[m])
    if g.strategy == "least_busy":
        return sorted(base, key=lambda m: (state.in_flight.get(m, 0), rank.get(m, 0)))
    # lowest_latency: measured p50, else the model's prior, unknown last
    def p50(name: str) -> float:
        m = models.get(name)
        got = _latency(m, state)[0] if m is not None else state.latency_ms.get(name, (None, None))[0]
        return got if got is not None else float("inf")

    return sorted(base, key=lambda m: (p50(m), rank.get(m, 0)))


def explain(compiled: CompiledPolicy, request: Request, state: RuntimeState = EMPTY_STATE) -> Decision:
    """`decide` with the trace on: what `engine explain` prints."""
    return decide(compiled, request, state, explain=True)

