"""Static checks (POLICY.md, "Static checks"): a named list of stages over a built policy.

Each stage returns diagnostics; none stops the others, so one run reports everything.
Order matters in one place only: expression stages run before the route stages that
reason about which query types a route can see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine.policy.diagnostics import Diagnostic, did_you_mean
from engine.policy.expr import REQUEST_NAMES, Expr, Scope, conjuncts, discrete_test, parse_expr_lenient
from engine.policy.load import Located, PathT
from engine.policy.model import Model, Policy, Route, downgrade_reach, expand


@dataclass(slots=True)
class Ctx:
    """What the stages share: the policy, positions, and expressions parsed so far."""

    policy: Policy
    loc: Located
    route_exprs: dict[int, Expr | None]
    qt_names: list[str]
    route_nodes: dict[int, Expr] = field(default_factory=dict)
    """Route conditions parsed leniently (also those with problems), for literal checks."""

    def diag(self, code: str, message: str, path: PathT, severity: str = "error", key: bool = False) -> Diagnostic:
        return self.loc.diag(code, message, path, severity=severity, key=key)


Stage = Callable[[Ctx], Iterable[Diagnostic]]

MIN_REQUEST_TOKENS = 6
"""The smallest request a quota can see: a one-character prompt (1 token + 4 of message framing)
and max_tokens 1."""


def check_references(c: Ctx) -> Iterable[Diagnostic]:
    """Unknown providers, models and duplicate names."""
    p = c.policy
    for name, m in p.models.items():
        if m.provider not in p.providers:
            yield c.diag("unknown-provider", f"model {name!r} uses unknown provider {m.provider!r}"
                         f"{did_you_mean(m.provider, list(p.providers))}", ("models", name, "provider"))
    seen: dict[str, int] = {}
    for i, r in enumerate(p.routes):
        if r.name in seen:
            yield c.diag("duplicate-route", f"route name {r.name!r} is already used by routes[{seen[r.name]}]",
                         ("routes", i, "name"))
        seen.setdefault(r.name, i)
        for attr in ("candidates", "fallback", "downgrade_to"):
            for j, m in enumerate(getattr(r, attr) or ()):
                if m not in p.models and m not in p.groups:
                    yield c.diag("unknown-model", f"route {r.name!r} names unknown model {m!r}"
                                 f"{did_you_mean(m, [*p.models, *p.groups])}", ("routes", i, attr, j))
    qseen: set[str] = set()
    for i, q in enumerate(p.quotas):
        if q.name in qseen:
            yield c.diag("duplicate-quota", f"quota name {q.name!r} is used twice", ("quotas", i, "name"))
        qseen.add(q.name)


def check_groups(c: Ctx) -> Iterable[Diagnostic]:
    """Groups name known models, each model in at most one group, and a name of their own."""
    p = c.policy
    routes = {r.name for r in p.routes}
    owner: dict[str, str] = {}
    for name, g in p.groups.items():
        if name in p.models or name in routes:
            kind = "model" if name in p.models else "route"
            yield c.diag("duplicate-name", f"group {name!r} has the name of a {kind}; clients pin groups, models "
                         "and routes by name, so each name must be unique", ("groups", name), key=True)
        for j, m in enumerate(g.models):
            if m not in p.models:
                why = " (a group cannot contain a group)" if m in p.groups else did_you_mean(m, list(p.models))
                yield c.diag("unknown-model", f"group {name!r} names unknown model {m!r}{why}",
                             ("groups", name, "models", j))
            elif m in owner:
                yield c.diag("duplicate-name", f"model {m!r} is already a member of group {owner[m]!r}; a model "
                             "belongs to one group at most", ("groups", name, "models", j))
            owner.setdefault(m, name)
        for m, _ in g.weights:
            if m not in g.models:
                yield c.diag("group-weight", f"group {name!r} weighs {m!r}, which is not one of its models "
                             f"({', '.join(g.models)})", ("groups", name, "weights", m), key=True)
        if g.weights and g.strategy != "weighted":
            yield c.diag("group-weight", f"group {name!r} has weights but strategy {g.strategy!r} ignores them "
                         "(use strategy: weighted)", ("groups", name, "weights"), severity="warning", key=True)


def check_signals(c: Ctx) -> Iterable[Diagnostic]:
    """Each signal has exactly one source; regexes compile."""
    for name, s in c.policy.signals.items():
        sources = [k for k in ("regex", "keywords", "when", "classify") if getattr(s, k)]
        if len(sources) != 1:
            yield c.diag("signal-source", f"signal {name!r} must have exactly one of regex, keywords, when, "
                         f"classify (has {', '.join(sources) or 'none'})", ("signals", name), key=True)
        for i, pattern in enumerate(s.regex):
            try:
                re.compile(pattern)
            except re.error as e:
                yield c.diag("bad-regex", f"invalid regex: {e}", ("signals", name, "regex", i))
        if s.when:
            yield from _parse(c, s.when, Scope(signals=frozenset(), query_type=False), ("signals", name, "when"))


def _parse(c: Ctx, text: str, scope: Scope, path: PathT) -> Iterable[Diagnostic]:
    _, problems = parse_expr_lenient(text, scope)
    for problem in problems:  # every problem of the expression, not only the first
        yield c.diag("expr", _expr_message(problem, text, scope, c), path)


def _expr_message(msg: str, text: str, scope: Scope, c: Ctx) -> str:
    m = re.match(r"unknown (name|signal) '([^']+)'", msg)
    if m:
        if m.group(1) == "signal":
            choices = list(c.policy.signals)
        else:
            choices = [*REQUEST_NAMES, *(["query_type"] if scope.query_type else []), "meta", "signals"]
        msg += did_you_mean(m.group(2), choices)
    return f"{msg} in {text!r}"


def check_expressions(c: Ctx) -> Iterable[Diagnostic]:
    """Every `when` parses, uses only documented names, and is within bounds."""
    p = c.policy
    route_scope = Scope(signals=frozenset(p.signals))
    for i, q in enumerate(p.query_types):
        if q.when:
            yield from _parse(c, q.when, Scope(signals=frozenset(p.signals), query_type=False),
                              ("query_types", i, "when"))
    for i, r in enumerate(p.routes):
        c.route_exprs[i] = None
        if r.when:
            lenient, problems = parse_expr_lenient(r.when, route_scope)
            yield from _parse(c, r.when, route_scope, ("routes", i, "when"))
            if lenient is not None:
                c.route_nodes[i] = lenient
            if not problems:
                c.route_exprs[i] = lenient
    if p.cache.when:
        yield from _parse(c, p.cache.when, route_scope, ("cache", "when"))


def check_query_types(c: Ctx) -> Iterable[Diagnostic]:
    """A default rule closes the list; scores and comparisons name declared query types."""
    p = c.policy
    rules = p.query_types
    if rules and rules[-1].when is not None:
        yield c.diag("query-types-default", "the last query_types rule must have no `when`, so every request "
                     "gets a type (add e.g. `- {type: chat}`)", ("query_types", len(rules) - 1))
    for i, q in enumerate(rules[:-1]):
        if q.when is None:
            yield c.diag("shadowed-query-type", f"query_types rules after {q.type!r} can never apply: it has no `when`",
                         ("query_types", i + 1), severity="warning")
            break
    known = c.qt_names
    for name, m in p.models.items():
        for qt, _ in m.scores:
            if qt not in known:
                yield c.diag("unknown-query-type", f"score for unknown query type {qt!r}{did_you_mean(qt, known)}"
                             f"; declared: {', '.join(known)}", ("models", name, "scores", qt), key=True)
    from engine.policy.expr import string_literals_compared

    # lenient nodes: a typo'd name elsewhere in the expression must not hide a bad literal
    for i, e in c.route_nodes.items():
        for value, _ in string_literals_compared(e.node, "query_type"):
            if value not in known:
                yield c.diag("unknown-query-type", f"query_type is never {value!r}{did_you_mean(value, known)}",
                             ("routes", i, "when"))


def route_query_types(c: Ctx, i: int) -> list[str]:
    """Query types that can reach route `i` (from its `query_type` tests; all when untested)."""
    e = c.route_exprs.get(i)
    allowed = set(c.qt_names)
    if e is not None:
        for conj in conjuncts(e.node):
            t = discrete_test(conj, lambda n: n == "query_type")
            if t is not None:
                allowed &= {v for v in t[1] if isinstance(v, str)}
    return [q for q in c.qt_names if q in allowed]


def _static_miss(m: Model, r: Route, qts: list[str]) -> str | None:
    req = r.require
    if req.score is not None and qts and all(m.score(q) < req.score for q in qts):
        best = max(m.score(q) for q in qts)
        return f"{m.name}: best score {best} < {req.score} for {', '.join(qts)}"
    missing = req.features - m.features
    if missing:
        return f"{m.name}: lacks {', '.join(sorted(missing))}"
    return None


def check_routes(c: Ctx) -> Iterable[Diagnostic]:
    """Unsatisfiable routes, shadowed routes, and cost ceilings nothing can meet."""
    p = c.policy
    unconditional: Route | None = None
    seen_when: dict[str, str] = {}
    for i, r in enumerate(p.routes):
        if unconditional is not None:
            yield c.diag("shadowed-route", f"route {r.name!r} can never match: route {unconditional.name!r} "
                         "before it has no `when`", ("routes", i), severity="warning")
        elif r.when and r.when.strip() in seen_when:
            yield c.diag("shadowed-route", f"route {r.name!r} can never match: route {seen_when[r.when.strip()]!r} "
                         "has the same `when` and comes first", ("routes", i, "when"), severity="warning")
        if r.when is None and unconditional is None:
            unconditional = r
        elif r.when:
            seen_when.setdefault(r.when.strip(), r.name)
        if any(m not in p.models and m not in p.groups for m in (r.candidates or ())):
            continue  # already reported as unknown-model
        pool = [p.models[m] for m in expand(p, r.candidates)] if r.candidates else list(p.models.values())
        qts = route_query_types(c, i)
        misses = [_static_miss(m, r, qts) for m in pool]
        if pool and all(misses) and not r.fallback:
            yield c.diag("unsatisfiable-route", f"no candidate of route {r.name!r} can ever meet its requirements ("
                         + "; ".join(x for x in misses if x) + ")", ("routes", i, "require"))
        if r.max_cost_usd is not None and pool:
            floor = min(m.est_cost(1, 1) for m in pool)
            if r.max_cost_usd < floor:
                yield c.diag("cost-ceiling", f"max_cost_usd {r.max_cost_usd:g} is below the cheapest candidate's "
                             f"minimum cost ${floor:.8f} (1 token in, 1 out): the route always refuses",
                             ("routes", i, "max_cost_usd"), severity="warning")
    if unconditional is None:
        yield c.diag("no-default-route", "no route without `when`: requests that match none are refused "
                     "(add a last route without `when`)", ("routes", len(p.routes) - 1), severity="warning")


def check_reachable_models(c: Ctx) -> Iterable[Diagnostic]:
    """Models that no route can ever pick."""
    p = c.policy
    reachable: set[str] = set()
    downgrades = any(q.on_exceed == "downgrade" for q in p.quotas)
    for i, r in enumerate(p.routes):
        reachable.update(expand(p, r.fallback))
        pool = expand(p, r.candidates) if r.candidates else tuple(p.models)
        qts = route_query_types(c, i)
        reachable.update(m for m in pool if _static_miss(p.models[m], r, qts) is None)
        if downgrades:
            reachable.update(downgrade_reach(p, r))
    for name in p.models:
        if name not in reachable:
            yield c.diag("unused-model", f"no route can ever pick model {name!r}", ("models", name), severity="warning",
                         key=True)


def check_quotas(c: Ctx) -> Iterable[Diagnostic]:
    """Quotas that cannot do what they say."""
    for i, q in enumerate(c.policy.quotas):
        if q.on_exceed == "downgrade" and not any(m.price.input + m.price.output > 0 for m in c.policy.models.values()):
            yield c.diag("quota-downgrade", "downgrade has no cheaper model to go to: every model is free",
                         ("quotas", i, "on_exceed"), severity="warning")
        tokens, cheapest = MIN_REQUEST_TOKENS, min(
            (m.est_cost(MIN_REQUEST_TOKENS - 1, 1) for m in c.policy.models.values()), default=0.0)
        if q.limit.tokens is not None and q.limit.tokens < tokens:
            yield c.diag("quota-below-minimum", f"quota {q.name!r} allows {q.limit.tokens} tokens per {q.window}, "
                         f"less than the smallest possible request ({tokens} tokens: a one-character prompt and "
                         "max_tokens 1): it refuses every request it covers", ("quotas", i, "limit", "tokens"),
                         severity="warning")
        if q.limit.cost_usd is not None and q.limit.cost_usd < cheapest:
            yield c.diag("quota-below-minimum", f"quota {q.name!r} allows ${q.limit.cost_usd:g} per {q.window}, "
                         f"less than the cheapest possible request (${cheapest:.8f}: a one-character prompt and "
                         "max_tokens 1 on the cheapest model): it refuses every request it covers",
                         ("quotas", i, "limit", "cost_usd"), severity="warning")


def check_log(c: Ctx) -> Iterable[Diagnostic]:
    """A decision log that can actually be read back."""
    if c.policy.log.sqlite == ":memory:":
        yield c.diag("log-memory", "log.sqlite cannot be ':memory:': the log is written by a background "
                     "thread, so its rows would be private to it and lost; give a file, or leave it empty "
                     "for no log", ("log", "sqlite"))


def check_quota_maps(c: Ctx) -> Iterable[Diagnostic]:
    """`by_provider` / `by_model` quota maps that name what exists."""
    p = c.policy
    for i, q in enumerate(p.quotas):
        if q.limit.by_provider and q.limit.by_model:
            yield c.diag("quota-map-both", f"quota {q.name!r} has both by_provider and by_model; split it in two",
                         ("quotas", i, "limit", "by_model"))
        for name, _ in q.limit.by_provider:
            if name not in p.providers:
                yield c.diag("quota-unknown-provider", f"quota {q.name!r} limits unknown provider {name!r}",
                             ("quotas", i, "limit", "by_provider", name), key=True)
        for name, _ in q.limit.by_model:
            if name not in p.models:
                yield c.diag("quota-unknown-model", f"quota {q.name!r} limits unknown model {name!r}",
                             ("quotas", i, "limit", "by_model", name), key=True)


def check_state(c: Ctx) -> Iterable[Diagnostic]:
    """A shared-state backend that can be reached, and scoped limits that mean something."""
    st = c.policy.state
    if st.backend == "redis" and not st.url:
        yield c.diag("state-url", "state.backend 'redis' needs state.url, e.g. redis://127.0.0.1:6379/0 or "
                     "${REDIS_URL}", ("state", "backend"))
    seen: set[str] = set()
    for i, lim in enumerate(c.policy.limits):
        if lim.name in seen:
            yield c.diag("duplicate-limit", f"limit name {lim.name!r} is used twice", ("limits", i, "name"))
        seen.add(lim.name)
        if lim.rpm is None and lim.tpm is None:
            yield c.diag("empty-limit", f"limit {lim.name!r} limits nothing; set rpm or tpm", ("limits", i))


STAGES: tuple[tuple[str, Stage], ...] = (
    ("references", check_references),
    ("groups", check_groups),
    ("signals", check_signals),
    # expressions must run before query_types and routes: they fill Ctx.route_exprs
    ("expressions", check_expressions),
    ("query_types", check_query_types),
    ("routes", check_routes),
    ("reachable_models", check_reachable_models),
    ("quotas", check_quotas),
    ("log", check_log),
    ("quota_maps", check_quota_maps),
    ("state", check_state),
)


def check_policy(policy: Policy, loc: Located) -> list[Diagnostic]:
    """Run every stage; returns all diagnostics (errors and warnings)."""
    qt_names: list[str] = []
    for q in policy.query_types:
        if q.type not in qt_names:
            qt_names.append(q.type)
    c = Ctx(policy=policy, loc=loc, route_exprs={}, qt_names=qt_names)
    out: list[Diagnostic] = []
    for _, stage in STAGES:
        out.extend(stage(c))
    return out
