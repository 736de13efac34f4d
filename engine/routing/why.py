"""What `engine explain` adds to a decision to answer "why this model?" completely.

`decide` keeps live traffic cheap; everything here runs only for a dry run: why each earlier
route did not match (the failing part of its `when` and the values it saw), the classifier's
label and evidence, whether the cache could answer, which quotas and rate limits apply, and,
given quota usage, each quota's headroom and verdict. Quota usage in a dry run is stated by the
caller (`--quota-used`, or `state: quota_used:` in `engine test`) and read through the same
`RuntimeState.quota_probe` seam the runtime's `QuotaManager` fills for live traffic.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.policy.compile import CompiledPolicy
from engine.policy.expr import Expr, conjuncts
from engine.policy.model import Limits, Policy, Quota, QuotaLimit
from engine.policy.quota_when import QuotaConditions
from engine.routing.decide import Decision, explain
from engine.routing.features import Features, Request, safe_truth
from engine.routing.state import EMPTY_STATE, QuotaProbe, RuntimeState

MEASURES = ("cost_usd", "tokens", "requests")
QuotaUsed = Mapping[str, Mapping[str, Any]]
"""quota name -> {measure: used} (every bucket of the quota), or -> {model or provider: {measure: used}}."""

_COST_EPS = 1e-9  # the ledger's tolerance on cost comparisons


@dataclass(frozen=True, slots=True)
class Explained:
    """A decision and the explain report built around it."""

    decision: Decision
    report: dict[str, Any]


def explain_request(compiled: CompiledPolicy, request: Request, state: RuntimeState = EMPTY_STATE, *,
                    quota_used: QuotaUsed | None = None) -> Explained:
    """Decide `request` with the trace on and build the full explain report.

    Args:
        compiled: the policy.
        request: the request to explain.
        state: health and limiter facts (EMPTY_STATE: everything healthy).
        quota_used: stated quota usage; replaces `state.quota_probe` when given.

    Raises:
        ValueError: `quota_used` names an unknown quota or measure.
    """
    meta = request.meta
    skip = conditional_skip(compiled.policy, compiled.features(request).env())
    if quota_used:
        probe = dry_quota_probe(compiled.policy, meta, quota_used, skip)
        state = RuntimeState(open_circuits=state.open_circuits, demoted=state.demoted, latency_ms=state.latency_ms,
                             unavailable=state.unavailable, quota_probe=probe, in_flight=state.in_flight)
    decision = explain(compiled, request, state)
    report = decision.as_dict()
    report["refused"] = refusal_kind(decision)
    report["routes_not_matched"] = routes_not_matched(compiled, decision)
    if compiled.needs_classifier:
        report["classifier"] = classifier_view(request)
    report["cache"] = cache_view(compiled, decision)
    report["quotas"] = quota_view(compiled.policy, decision, quota_used or {}, skip)
    report["limits"] = limits_view(compiled.policy, decision)
    return Explained(decision, report)


def refusal_kind(d: Decision) -> str | bool:
    """False when a model was chosen, else `no_route`, `quota` or `no_model` (what `refused:` matches)."""
    if d.plan:
        return False
    if d.route is None:
        return "no_route"
    return "quota" if d.quota_refused else "no_model"


# -- routes ---------------------------------------------------------------------------------------


def routes_not_matched(compiled: CompiledPolicy, d: Decision) -> list[dict[str, Any]]:
    """Each route before the matched one (all, when none matched): the first part of its `when`
    that is false, with the values of the names that part reads."""
    env = d.features.env()
    out = []
    for cr in compiled.routes:
        if cr.route.name == d.route:
            break
        if cr.when is None:  # cannot happen before a match: an unconditional route matches
            continue
        failed, values = _failing_part(cr.when, env)
        out.append({"route": cr.route.name, "when": cr.when.text, "false": failed, "values": values})
    return out


def _failing_part(when: Expr, env: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    for part in conjuncts(when.node):
        names = sorted({n.id for n in ast.walk(part) if isinstance(n, ast.Name)
                        and n.id not in ("True", "False", "None")})
        expr = Expr(text=ast.unparse(part), node=part, names=frozenset(names))
        if not safe_truth(expr, env):
            return expr.text, {n: env.get(n) for n in names}
    names = sorted(when.names)
    return when.text, {n: env.get(n) for n in names}


# -- classifier and cache -------------------------------------------------------------------------


def classifier_view(request: Request) -> dict[str, Any]:
    """The built-in classifier's label for the last user message, its three strongest cue scores and,
    when the cues were unsure, the n-gram model's three most likely labels (the second opinion)."""
    from engine.classify import LABELS, classify
    from engine.classify.assisted import consults
    from engine.classify.classifier import scores
    from engine.classify.ngram import load

    text = request.last_user_text
    cue = scores(text)
    ranked = sorted(cue.items(), key=lambda kv: -kv[1])[:3]
    out: dict[str, Any] = {"label": classify(text), "evidence": [[label, round(score, 3)] for label, score in ranked]}
    if consults(cue):
        probs = sorted(zip(LABELS, load(labels=LABELS).probabilities(text), strict=True), key=lambda kv: -kv[1])
        out["second_opinion"] = [[label, round(p, 3)] for label, p in probs[:3]]
    return out


def cache_view(compiled: CompiledPolicy, d: Decision) -> dict[str, Any]:
    """Whether the response cache may answer this request (a hit needs an identical earlier request)."""
    c = compiled.policy.cache
    if not c.enabled:
        return {"enabled": False, "eligible": False, "why": "the cache is off"}
    if d.features.stream:
        return {"enabled": True, "eligible": False, "why": "streaming requests are not cached"}
    if compiled.cache_when is not None and not safe_truth(compiled.cache_when, d.features.env()):
        return {"enabled": True, "eligible": False, "why": f"cache.when is false: {c.when}"}
    scope = "per tenant" if c.scope == "tenant" else "shared by every tenant"
    cond = f"cache.when holds ({c.when}); " if c.when else ""
    return {"enabled": True, "eligible": True,
            "why": f"{cond}served from the cache if an identical request was answered in the last {c.ttl_s:g} s "
                   f"({scope}, {c.backend})"}


# -- quotas ---------------------------------------------------------------------------------------


def _scope_key(q: Quota, meta: Mapping[str, Any], model: str | None, provider: str | None) -> str | None:
    values = {"tenant": meta.get("tenant"), "key": meta.get("key"), "model": model, "provider": provider}
    parts = []
    for name in ("tenant", "key", "model", "provider"):
        if name in q.scope:
            v = values[name]
            if v is None:
                return None
            parts.append(f"{name}={v}")
    return ",".join(parts)


def _check_used(policy: Policy, used: QuotaUsed) -> None:
    names = {q.name for q in policy.quotas}
    for qname, spec in used.items():
        if qname not in names:
            raise ValueError(f"quota_used names unknown quota {qname!r}; quotas: {', '.join(sorted(names)) or 'none'}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"quota_used.{qname} must be a mapping of measure to amount")
        for k, v in spec.items():
            inner = v if isinstance(v, Mapping) else {k: v}
            for measure, amount in inner.items():
                if measure not in MEASURES:
                    raise ValueError(f"quota_used.{qname}: unknown measure {measure!r}; use {', '.join(MEASURES)}")
                if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                    raise ValueError(f"quota_used.{qname}.{measure} must be a number >= 0, got {amount!r}")


def _used(spec: Mapping[str, Any], model: str, provider: str) -> dict[str, float]:
    """Usage of the bucket a request on `model` counts against: per-model/provider entries win."""
    for k in (model, provider):
        inner = spec.get(k)
        if isinstance(inner, Mapping):
            return {m: float(v) for m, v in inner.items()}
    return {m: float(v) for m, v in spec.items() if m in MEASURES}


def conditional_skip(policy: Policy, env: Mapping[str, Any]) -> frozenset[str]:
    """Quotas whose `when` does not hold for a request with this environment (the ledger's rule)."""
    return QuotaConditions(policy.quotas, policy.signals).skipped(env)


def _limit_for(q: Quota, model: str, provider: str) -> QuotaLimit | None:
    """The limits a request on `model` counts against: its `by_model`/`by_provider` entry, else the
    plain measures beside the map, else none (a map that does not list it and has nothing beside)."""
    lim = q.limit
    entries, name = (lim.by_model, model) if lim.by_model else (lim.by_provider, provider)
    if not entries:
        return lim
    for n, sub in entries:
        if n == name:
            return sub
    plain = any(getattr(lim, m) is not None for m in MEASURES)
    return lim if plain else None


def _over(q: Quota, used: Mapping[str, float], tokens: int, cost: float, model: str,
          provider: str) -> tuple[str, float, float, float] | None:
    """(measure, used, requested, limit) of the first limit this estimate would pass, or None."""
    lims = _limit_for(q, model, provider)
    if lims is None:
        return None
    for measure, want in (("cost_usd", cost), ("tokens", float(tokens)), ("requests", 1.0)):
        limit = getattr(lims, measure)
        if limit is None:
            continue
        have = used.get(measure, 0.0)
        if have + want > limit + (_COST_EPS if measure == "cost_usd" else 0):
            return measure, have, want, float(limit)
    return None


def _n(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.10g}"


def dry_quota_probe(policy: Policy, meta: Mapping[str, Any], used: QuotaUsed,
                    skip: frozenset[str] = frozenset()) -> QuotaProbe:
    """A `RuntimeState.quota_probe` over stated usage, with the ledger's rules: every quota whose
    scope the request carries must fit the estimate (1 request, prompt + max_tokens, worst-case cost).

    Raises:
        ValueError: `used` names an unknown quota or measure, or a negative amount.
    """
    _check_used(policy, used)
    models = policy.models

    def probe(model: str, tokens: int, cost: float) -> tuple[str, bool] | None:
        provider = models[model].provider
        for q in policy.quotas:
            key = _scope_key(q, meta, model, provider)
            if key is None or q.name in skip:
                continue
            over = _over(q, _used(used.get(q.name, {}), model, provider), tokens, cost, model, provider)
            if over is not None:
                measure, have, want, limit = over
                alone = "; this one request's estimate alone exceeds the whole limit" if want > limit else ""
                return (f"quota {q.name!r} ({key or 'global'}, on_exceed={q.on_exceed}): {measure} used {_n(have)} + "
                        f"{_n(want)} > limit {_n(limit)}{alone}", q.on_exceed == "downgrade")
        return None

    return probe


def quota_view(policy: Policy, d: Decision, used: QuotaUsed,
               skip: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every quota with whether it applies to this request and, given usage, its headroom and verdict."""
    f: Features = d.features
    first = d.plan[0] if d.plan else None
    blocked_by: dict[str, list[str]] = {}
    for m, _, _, reason, _ in d.rows:
        # rows say "quota: <the probe's reason>", and every probe's reason starts "quota 'NAME'"
        if reason and reason.startswith("quota: quota '"):
            name = reason.split("'")[1]
            if m.name not in blocked_by.setdefault(name, []):
                blocked_by[name].append(m.name)
    out = []
    for q in policy.quotas:
        limit = {k: getattr(q.limit, k) for k in MEASURES if getattr(q.limit, k) is not None}
        view: dict[str, Any] = {"name": q.name, "scope": list(q.scope) or ["global"], "window": q.window,
                                "limit": limit, "on_exceed": q.on_exceed}
        model = first or (d.rows[0][0].name if d.rows else None)
        provider = policy.models[model].provider if model else None
        key = _scope_key(q, f.meta, model, provider)
        if q.name in skip:
            view["applies"] = False
            view["verdict"] = f"does not apply: its when is false ({q.when})"
            out.append(view)
            continue
        view["applies"] = key is not None
        if key is None:
            missing = [s for s in q.scope if s in ("tenant", "key") and f.meta.get(s) is None]
            view["verdict"] = (f"does not apply: the request has no meta.{' or meta.'.join(missing)}" if missing
                               else "does not apply: no model was considered")
            out.append(view)
            continue
        view["scope_key"] = key or "global"
        if q.name in used and model is not None and provider is not None:
            have = _used(used[q.name], model, provider)
            view["used"] = {k: have.get(k, 0.0) for k in limit}
            view["headroom"] = {k: round(v - have.get(k, 0.0), 10) for k, v in limit.items()}
        view["verdict"] = _verdict(q, d, blocked_by.get(q.name, []))
        out.append(view)
    return out


def _verdict(q: Quota, d: Decision, blocked: list[str]) -> str:
    if not blocked:
        return "has room for this request"
    if d.downgraded:
        return f"no room on {', '.join(blocked)}: downgrade to {d.plan[0]}"
    if not d.plan:
        return f"no room on {', '.join(blocked)}: {'reject' if q.on_exceed == 'reject' else 'nothing to downgrade to'}"
    return f"no room on {', '.join(blocked)}: the plan goes on without them"


# -- limits ---------------------------------------------------------------------------------------


def _limits(lim: Limits) -> dict[str, int]:
    return {k: v for k in ("rpm", "tpm", "concurrency") if (v := getattr(lim, k)) is not None}


def limits_view(policy: Policy, d: Decision) -> list[dict[str, Any]]:
    """Rate limits of each planned model and its provider (a limiter that would wait past the
    deadline makes the runtime skip the model)."""
    out = []
    for name in d.plan:
        m = policy.models[name]
        view: dict[str, Any] = {"model": name, "provider": m.provider}
        if lim := _limits(m.limits):
            view["model_limits"] = lim
        if lim := _limits(policy.providers[m.provider].limits):
            view["provider_limits"] = lim
        if len(view) > 2:
            out.append(view)
    return out
