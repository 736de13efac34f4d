"""The decision tree picks exactly what naive first-match evaluation picks (DESIGN.md)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.policy.build import build_policy
from engine.policy.compile import compile_policy
from engine.routing.decide import decide_features
from engine.routing.features import Features
from engine.routing.state import RuntimeState

QTS = ["code", "math", "chat", "creative"]
SIGNALS = ["s1", "s2", "s3"]
META = {"tier": ["free", "pro", "premium"], "region": ["eu", "us"], "n": [0, 1, 2]}
MODELS = ["m0", "m1", "m2", "m3"]
GROUP_STRATEGIES = ["weighted", "shuffle", "least_busy", "lowest_latency"]


def _atom() -> st.SearchStrategy[str]:
    qt_eq = st.sampled_from(QTS).map(lambda q: f"query_type == '{q}'")
    qt_in = st.lists(st.sampled_from(QTS), min_size=1, max_size=3, unique=True).map(
        lambda qs: f"query_type in {qs!r}")
    sig = st.sampled_from(SIGNALS).map(lambda s: f"signals.{s}")
    not_sig = st.sampled_from(SIGNALS).map(lambda s: f"not signals.{s}")
    meta_eq = st.sampled_from(sorted(META)).flatmap(
        lambda k: st.sampled_from(META[k]).map(lambda v: f"meta.{k} == {v!r}"))
    meta_ne = st.sampled_from(sorted(META)).flatmap(
        lambda k: st.sampled_from(META[k]).map(lambda v: f"meta.{k} != {v!r}"))
    literal_first = st.sampled_from(QTS).map(lambda q: f"'{q}' == query_type")
    tokens = st.integers(0, 3000).map(lambda n: f"prompt_tokens > {n}")
    meta_num = st.integers(0, 2).map(lambda n: f"meta.n >= {n}")  # None >= n raises: counts as false
    flags = st.sampled_from(["stream", "not stream", "has_tools", "temperature == 0"])
    return st.one_of(qt_eq, qt_in, sig, not_sig, meta_eq, meta_ne, literal_first, tokens, meta_num, flags)


def _when() -> st.SearchStrategy[str | None]:
    conj = st.lists(_atom(), min_size=1, max_size=4).map(lambda xs: " and ".join(xs))
    disj = st.lists(conj, min_size=1, max_size=2).map(lambda xs: " or ".join(f"({x})" for x in xs))
    return st.one_of(st.none(), conj, conj, disj)


@st.composite
def policies(draw: Any) -> Any:
    n_routes = draw(st.integers(1, 12))
    grouped = draw(st.booleans())
    routes = []
    for i in range(n_routes):
        r: dict[str, Any] = {"name": f"r{i}", "strategy": draw(st.sampled_from(
            ["best", "cheapest", "ordered", "fastest", "largest_context"]))}
        w = draw(_when())
        if w is not None:
            r["when"] = w
        names = [*MODELS, "g"] if grouped else MODELS
        if draw(st.booleans()):
            r["candidates"] = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
        if draw(st.booleans()):
            r["fallback"] = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        if draw(st.booleans()):
            r["require"] = {"score": draw(st.integers(1, 5))}
        routes.append(r)
    models = {
        m: {"provider": "sim", "price": {"input": draw(st.floats(0, 10)), "output": draw(st.floats(0, 30))},
            "context_window": draw(st.sampled_from([4000, 32000, 200000])),
            "scores": {q: draw(st.integers(1, 5)) for q in QTS},
            "latency": {"p50_ms": draw(st.integers(100, 3000)), "p95_ms": 5000}}
        for m in MODELS
    }
    data = {"version": 1, "providers": {"sim": {"adapter": "simulated"}}, "models": models,
            "signals": {s: {"keywords": [s]} for s in SIGNALS},
            "query_types": [{"type": q, "when": f"meta.qt == '{q}'"} for q in QTS[:-1]] + [{"type": QTS[-1]}],
            "routes": routes}
    if grouped:
        strategy = draw(st.sampled_from(GROUP_STRATEGIES))
        data["groups"] = {"g": {"models": ["m1", "m2", "m3"], "strategy": strategy,
                                **({"weights": {"m1": 5, "m2": 1}} if strategy == "weighted" else {})}}
    return compile_policy(build_policy(data))


@st.composite
def features(draw: Any) -> Features:
    meta = {k: draw(st.sampled_from([*v, None, "other"])) for k, v in META.items() if draw(st.booleans())}
    return Features(
        prompt_tokens=draw(st.integers(1, 5000)), max_tokens=draw(st.sampled_from([1, 500, 4000])),
        temperature=draw(st.sampled_from([0.0, 0.7])), stream=draw(st.booleans()),
        has_tools=draw(st.booleans()), has_images=False, has_system=False,
        query_type=draw(st.sampled_from(QTS)), signals={s: draw(st.booleans()) for s in SIGNALS}, meta=meta,
        request_id=draw(st.sampled_from(["", "r1", "req-42", "x"])),
    )


STATES = [RuntimeState(), RuntimeState(in_flight={"m1": 3, "m2": 0, "m3": 1}),
          RuntimeState(latency_ms={"m2": (50.0, 90.0)}, open_circuits={"m3": "errors"})]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(features(), min_size=1, max_size=8), st.sampled_from(STATES))
def test_tree_equals_naive_first_match(compiled: Any, requests: list[Features], state: RuntimeState) -> None:
    for f in requests:
        tree = decide_features(compiled, f, state)
        naive = decide_features(compiled, f, state, naive=True)
        assert (tree.route, tree.plan, tree.refusal) == (naive.route, naive.plan, naive.refusal)
        # seeded: the same request id always gets the same plan, explain included
        assert decide_features(compiled, f, state, explain=True).plan == tree.plan
        _group_invariants(compiled, tree.plan, state)


def _group_invariants(compiled: Any, plan: tuple[str, ...], state: RuntimeState) -> None:
    """Members of a group are contiguous and ordered as the group's strategy says."""
    members = [i for i, m in enumerate(plan) if m in compiled.group_of]
    if not members:
        return
    assert members == list(range(members[0], members[0] + len(members))), plan
    if state.demoted:
        return
    order = [plan[i] for i in members]
    g = compiled.group_of[order[0]]
    if g.strategy == "least_busy":
        busy = [state.in_flight.get(m, 0) for m in order]
        assert busy == sorted(busy), (plan, busy)
    elif g.strategy == "lowest_latency":
        p50 = [state.latency_ms.get(m, (compiled.policy.models[m].latency.p50_ms, 0))[0] for m in order]
        assert p50 == sorted(p50), (plan, p50)


def test_tree_is_smaller_than_the_route_list_on_discrete_policies() -> None:
    routes = [{"name": f"r{i}", "when": f"query_type == '{QTS[i % 4]}' and meta.tier == 't{i}'"} for i in range(200)]
    routes.append({"name": "default"})
    data = {"version": 1, "providers": {"sim": {"adapter": "simulated"}},
            "models": {"m": {"provider": "sim", "price": {"input": 1, "output": 1}, "context_window": 1000}},
            "query_types": [{"type": q, "when": f"meta.qt == '{q}'"} for q in QTS[:-1]] + [{"type": QTS[-1]}],
            "routes": routes}
    compiled = compile_policy(build_policy(data))
    env = {"query_type": "math", "meta.tier": "t101", "prompt_tokens": 1}
    from engine.policy.expr import make_env

    assert compiled.match(make_env(env)).route.name == "r101"  # type: ignore[union-attr]
    # the leaf reached holds only the matching route (it matches unconditionally there), not 201 routes
    node = compiled.tree
    from engine.policy.compile import Branch

    while isinstance(node, Branch):
        node = node.branches.get(make_env(env).get(node.var), node.default)
    assert [cr.route.name for cr, _ in node.entries] == ["r101"]
