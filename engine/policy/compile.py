"""Compile a checked policy into a decision tree (DESIGN.md, "Compiling").

Each route's `when` is split into conjuncts. Equality and membership tests on discrete
features (`query_type`, `meta.*`, `signals.*`, request booleans) become branch nodes keyed by
value; what remains is a residual predicate checked at the leaf, in route order. Walking the
tree therefore visits only the routes that could still match, and a leaf's list stops at the
first route that matches unconditionally (everything after it is shadowed).
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.policy.expr import Expr, Scope, conjuncts, discrete_test, make_env, parse_expr
from engine.policy.model import Group, Model, Policy, Route, downgrade_reach, expand
from engine.policy.predicate import compile_predicate
from engine.routing.features import Features, Request, SignalMatcher, count_prompt_tokens, safe_truth
from engine.routing.tokens import PromptTokens, TokenizedModels

MAX_TREE_NODES = 50_000
"""Beyond this many nodes the builder stops splitting and leaves the tests at the leaves,
so a policy with many unrelated discrete tests cannot blow the tree up exponentially."""


def is_discrete(name: str) -> bool:
    """Features with few values, worth branching on."""
    return name in ("query_type", "stream", "has_tools", "has_images", "has_system") or name.startswith(
        ("meta.", "signals."))


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class CompiledRoute:
    """A route with its condition split for the tree.

    Attributes:
        route: the policy route.
        when: the whole condition (None = always), used by naive evaluation and traces.
        tests: discrete tests, name -> allowed values; all must hold.
        residual: the other conjuncts, as one expression (None = nothing left).
        pool: the models it may pick from: its candidates (groups expanded) as listed, or all
            models in `models` order.
        fallback: its fallback models (groups expanded).
    """

    route: Route
    when: Expr | None
    tests: Mapping[str, frozenset[Any]]
    residual: Expr | None
    pool: tuple[Model, ...]
    fallback: tuple[Model, ...]
    downgrade: tuple[Model, ...] = ()
    """Models a `downgrade` quota may switch to (its `downgrade_to`, else pool and fallbacks)."""
    tokenized: TokenizedModels | None = None
    """Its models (pool, fallbacks, downgrades) that have a tokenizer; None: no exact counts."""
    static: dict[str, tuple[tuple[Model, int, str | None], ...]] = field(default_factory=dict)
    """query type -> (model, score, why the route's `require` excludes it or None) for the pool.
    Request-independent, so it is computed at compile time (or once, for an undeclared type)."""

    def static_for(self, query_type: str) -> tuple[tuple[Model, int, str | None], ...]:
        """Pool models with their score and static requirement miss for `query_type`."""
        found = self.static.get(query_type)
        if found is None:
            found = self.static[query_type] = _static_rows(self.route, self.pool, query_type)
        return found

    def __repr__(self) -> str:
        return f"CompiledRoute({self.route.name!r})"

    def residual_holds(self, env: Mapping[str, Any]) -> bool:
        """Whether the non-discrete part of `when` holds (errors count as false)."""
        return self.residual is None or safe_truth(self.residual, env)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Leaf:
    """Routes still possible at this point, in order; `tests` left unchecked by the tree."""

    entries: tuple[tuple[CompiledRoute, Mapping[str, frozenset[Any]]], ...]

    def __repr__(self) -> str:
        return "Leaf(" + ", ".join(cr.route.name for cr, _ in self.entries) + ")"


@dataclass(frozen=True, slots=True, eq=False)
class Branch:
    """Switch on one discrete feature: `branches[value]`, else `default`."""

    var: str
    branches: Mapping[Any, Branch | Leaf]
    default: Branch | Leaf


Tree = Branch | Leaf


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """A policy ready for `decide`: immutable, shareable, never re-parsed."""

    policy: Policy
    routes: tuple[CompiledRoute, ...]
    tree: Tree
    signals: tuple[SignalMatcher, ...]
    query_types: tuple[tuple[str, Expr | None], ...]
    cache_when: Expr | None
    needs_classifier: bool
    node_count: int
    models_by_cost: tuple[Model, ...] = field(default=())
    group_of: Mapping[str, Group] = field(default_factory=dict)
    """member model -> its group, for keeping members together in a plan."""
    downgrades: bool = False
    """Some quota says `on_exceed: downgrade` (explain then shows what a downgrade would pick)."""
    embedding_signals: tuple[SignalMatcher, ...] = ()
    """The `similar_to` signals: the Router prepares them off the event loop before deciding."""
    dynamic_groups: bool = False
    """Some group orders by live state (`least_busy`): the runtime must report requests in flight."""
    tokenized: bool = False
    """Some model has a tokenizer: requests carry a `PromptTokens` for exact counts on demand."""

    def features(self, request: Request) -> Features:
        """Compute prompt tokens, signals and query type for `request`."""
        text = request.last_user_text
        pt = request.prompt_tokens
        tokens = None
        if pt is None:
            pt = max(count_prompt_tokens(request.messages, request.options), request.prompt_tokens_at_least)
            if self.tokenized:
                tokens = PromptTokens(pt, request.messages, request.options, request.prompt_tokens_at_least)
        base: dict[str, Any] = {
            "prompt_tokens": pt, "max_tokens": request.max_tokens,
            "temperature": request.temperature, "stream": request.stream, "has_tools": request.has_tools,
            "has_images": request.has_images, "has_system": request.has_system,
        }
        for k, v in request.meta.items():
            base["meta." + str(k)] = v

        env = make_env(base)
        label = None
        if self.needs_classifier:
            from engine.classify import classify

            label = classify(text)
        signals: dict[str, bool] = {}
        for s in self.signals:
            v = s(text, env, label)
            signals[s.name] = v
            env["signals." + s.name] = v  # type: ignore[index]
        query_type = self.query_types[-1][0]
        for qt, when in self.query_types:
            if when is None or safe_truth(when, env):
                query_type = qt
                break
        return Features(
            prompt_tokens=base["prompt_tokens"], max_tokens=request.max_tokens, temperature=request.temperature,
            stream=request.stream, has_tools=request.has_tools, has_images=request.has_images,
            has_system=base["has_system"], query_type=query_type, signals=signals, meta=request.meta,
            needs=request.needs, request_id=request.request_id,
            prompt_tokens_stated=request.prompt_tokens is not None, tokens=tokens,
        )

    def match(self, env: Mapping[str, Any]) -> CompiledRoute | None:
        """The first route whose `when` holds, by walking the tree."""
        node = self.tree
        while isinstance(node, Branch):
            branch = node
            try:
                node = branch.branches.get(env.get(branch.var), branch.default)
            except TypeError:  # unhashable meta value: equals no literal
                node = branch.default
        for cr, pending in node.entries:
            if pending and not _tests_hold(pending, env):
                continue
            if cr.residual_holds(env):
                return cr
        return None

    def match_naive(self, env: Mapping[str, Any]) -> CompiledRoute | None:
        """First-match evaluation of every `when` in order: the reference semantics."""
        for cr in self.routes:
            if cr.when is None or safe_truth(cr.when, env):
                return cr
        return None


def _static_rows(route: Route, pool: tuple[Model, ...], qt: str) -> tuple[tuple[Model, int, str | None], ...]:
    req = route.require
    rows = []
    for m in pool:
        score = m.score(qt)
        reason = None
        if req.score is not None and score < req.score:
            reason = f"score {score} for {qt} < required {req.score}"
        elif req.features - m.features:
            reason = f"lacks feature(s) {', '.join(sorted(req.features - m.features))}"
        rows.append((m, score, reason))
    return tuple(rows)


def _tests_hold(tests: Mapping[str, frozenset[Any]], env: Mapping[str, Any]) -> bool:
    for var, allowed in tests.items():
        try:
            if env.get(var) not in allowed:
                return False
        except TypeError:
            return False
    return True


def _split(when: Expr | None) -> tuple[dict[str, frozenset[Any]], Expr | None]:
    if when is None:
        return {}, None
    tests: dict[str, frozenset[Any]] = {}
    rest: list[ast.expr] = []
    for c in conjuncts(when.node):
        t = discrete_test(c, is_discrete)
        if t is None:
            rest.append(c)
            continue
        name, allowed = t
        # two tests on one name intersect (`x in [a,b] and x == a`)
        tests[name] = tests[name] & allowed if name in tests else allowed
    if not rest:
        return tests, None
    node: ast.expr = rest[0] if len(rest) == 1 else ast.BoolOp(op=ast.And(), values=rest)
    ast.fix_missing_locations(node)
    # the conjuncts were checked when `when` was parsed; keep their rewritten nodes as they are
    names = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
    return tests, Expr(text=ast.unparse(node), node=node, names=names)


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Build the decision tree and everything else `decide` needs. Assumes a checked policy."""
    scope = Scope(signals=frozenset(policy.signals))
    models = list(policy.models.values())
    routes = []
    for r in policy.routes:
        when = parse_expr(r.when, scope) if r.when else None
        tests, residual = _split(when)
        pool = tuple(policy.models[m] for m in expand(policy, r.candidates)) if r.candidates else tuple(models)
        static = {q.type: _static_rows(r, pool, q.type) for q in policy.query_types}
        fallback = tuple(policy.models[m] for m in expand(policy, r.fallback))
        downgrade = tuple(policy.models[m] for m in downgrade_reach(policy, r))
        routes.append(CompiledRoute(route=r, when=when, tests=tests, residual=residual, pool=pool,
                                    fallback=fallback, downgrade=downgrade,
                                    tokenized=TokenizedModels.of(pool + fallback + downgrade), static=static))
    base_scope = Scope(signals=frozenset(), query_type=False)
    signals = tuple(
        SignalMatcher(s, parse_expr(s.when, base_scope) if s.when else None) for s in policy.signals.values())
    qt_scope = Scope(signals=frozenset(policy.signals), query_type=False)
    query_types = tuple((q.type, parse_expr(q.when, qt_scope) if q.when else None) for q in policy.query_types)
    cache_when = compile_predicate(parse_expr(policy.cache.when, scope)) if policy.cache.when else None
    counter = [0]
    tree = _build([(cr, dict(cr.tests)) for cr in routes], counter)
    return CompiledPolicy(
        policy=policy, routes=tuple(routes), tree=tree, signals=signals, query_types=query_types,
        cache_when=cache_when, needs_classifier=any(s.needs_classifier for s in signals), node_count=counter[0],
        models_by_cost=tuple(sorted(models, key=lambda m: (m.price.input + m.price.output, m.order))),
        group_of={m: g for g in policy.groups.values() for m in g.models},
        downgrades=any(q.on_exceed == "downgrade" for q in policy.quotas),
        embedding_signals=tuple(s for s in signals if s.embeds),
        dynamic_groups=any(g.strategy == "least_busy" for g in policy.groups.values()),
        tokenized=any(m.tokenizer is not None for m in models),
    )


Entry = tuple[CompiledRoute, dict[str, frozenset[Any]]]


def _build(entries: list[Entry], counter: list[int]) -> Tree:
    counter[0] += 1
    # a route with nothing left to test matches unconditionally: later ones are shadowed here
    for i, (cr, tests) in enumerate(entries):
        if not tests and cr.residual is None:
            entries = entries[: i + 1]
            break
    usage = Counter(var for _, tests in entries for var in tests)
    if not usage or counter[0] >= MAX_TREE_NODES:
        return Leaf(entries=tuple((cr, dict(tests)) for cr, tests in entries))
    # branch on the most tested feature; ties go to the one the earliest route tests
    first_vars = [v for _, t in entries for v in t]
    var = max(usage, key=lambda v: (usage[v], -first_vars.index(v)))
    values: list[Any] = []
    for _, tests in entries:
        for v in tests.get(var, ()):
            if v not in values:
                values.append(v)
    branches: dict[Any, Tree] = {}
    for value in values:
        sub: list[Entry] = []
        for cr, tests in entries:
            if var not in tests:
                sub.append((cr, tests))
            elif value in tests[var]:
                sub.append((cr, {k: v for k, v in tests.items() if k != var}))
        branches[value] = _build(sub, counter)
    default = _build([(cr, tests) for cr, tests in entries if var not in tests], counter)
    return Branch(var=var, branches=branches, default=default)
