"""What-if replay: re-decide logged requests under another policy.

Each logged request is turned back into the `Features` its decision saw (token estimate,
parameters, metadata, `has_*` flags and signal values are all in the log) and decided again with
the same pure `decide` as live traffic. Quotas are replayed too: each policy gets an in-memory
quota ledger that follows the log's timestamps, charged with what each served request would have
cost on the model the policy picks (the logged token counts at that model's prices).

What the log cannot answer is counted and explained, never guessed:

- a signal the log does not hold (new, or redefined relative to the baseline policy) that reads
  the prompt text (regex, keywords, classifier), when the log kept only a hash of the prompt.
  Such a request is still exact if every value of the unknown signals leads to the same route
  and plan (each combination is decided); otherwise it is reported as not re-decidable;
- requests rejected before routing (`bad_request`) have nothing to decide;
- a cache hit logs no token counts, so its cost under a policy that would not cache it is not
  estimated.

Requests that are not re-decided exactly are not charged to the replayed quota ledgers either
(which model, hence which quotas and what cost, is the unknown).

Comparisons are made against a *baseline*: the policy that wrote the log, decided again in the
same conditions (so runtime effects of the time, such as open circuits, do not count as changes),
or, without one, against the decisions as logged.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import QuotaExceeded
from engine.policy.api import compile_policy
from engine.policy.compile import CompiledPolicy
from engine.policy.expr import make_env
from engine.policy.model import Policy, Signal
from engine.routing.decide import Decision, decide_features
from engine.routing.features import Features, Request, safe_truth
from engine.routing.state import EMPTY_STATE, RuntimeState
from engine.runtime.quotas import QuotaContext, QuotaManager
from engine.store.outcomes import ANSWERED
from engine.store.query import request_rows

__all__ = ["MAX_UNKNOWN_SIGNALS", "ReplayReport", "replay"]

MAX_UNKNOWN_SIGNALS = 6
"""Unknown signals beyond this many are not enumerated (2^n decisions); the request is inexact."""

_ROLES = ("system", "user", "assistant", "tool")


class _ReplayClock:
    """The quota ledger's clock: the timestamp of the request being replayed."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@dataclass(slots=True)
class _Side:
    """One policy under replay, with its own quota ledger."""

    policy: Policy
    compiled: CompiledPolicy
    clock: _ReplayClock
    quotas: QuotaManager | None

    @classmethod
    def of(cls, policy: Policy) -> _Side:
        clock = _ReplayClock()
        quotas = QuotaManager(policy.quotas, path=None, clock=clock, signals=policy.signals) if policy.quotas else None
        return cls(policy, compile_policy(policy), clock, quotas)

    def state(self, tenant: str | None, key: str | None, features: Features | None = None) -> RuntimeState:
        if self.quotas is None:
            return EMPTY_STATE
        quotas, models = self.quotas, self.policy.models
        # conditional quotas (`when:`) apply as they would have live
        skip = quotas.skipped(features.env()) if features is not None else frozenset()

        def probe(model: str, tokens: int, cost: float) -> tuple[str, bool] | None:
            block = quotas.check(QuotaContext(tenant, key, model, models[model].provider, skip), tokens, cost)
            return None if block is None else (block.reason, block.on_exceed == "downgrade")

        return RuntimeState(quota_probe=probe)

    def charge(self, row: Mapping[str, Any], model: str | None, cost: float | None) -> None:
        """Book a served request in this side's quota ledger."""
        if self.quotas is None or model is None or cost is None:
            return
        m = self.policy.models[model]
        skip: frozenset[str] = frozenset()
        if self.quotas.conditional:
            f = _features(self.compiled, row, dict(_fixed_signals(row)), row["query_type"] or "")
            skip = self.quotas.skipped(f.env())
        ctx = QuotaContext(row["tenant"], row["api_key_id"], model, m.provider, skip)
        tokens = int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0)
        try:
            self.quotas.settle(self.quotas.reserve(ctx, tokens, cost), tokens, cost)
        except QuotaExceeded:
            pass  # the probe let it through on estimates; the decision stands as replayed


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    """The outcome of a replay.

    Attributes:
        db: the decision log; policy: the new policy's source; baseline: the baseline's source
            (None: compared with the decisions as logged).
        rows: requests read; replayed: re-decided exactly; skipped: per reason, rows with
            nothing to decide; inexact: per reason, rows that could not be re-decided exactly.
        route_changed, model_changed, plan_changed: among the replayed rows.
        newly_refused: per kind (no_route, no_model, quota), requests the new policy refuses and
            the baseline did not; no_longer_refused: the reverse.
        old_cost_usd, new_cost_usd: estimated cost of the served requests whose cost both sides
            can price (logged token counts at the first model of each plan); costed: how many.
        logged_cost_usd: what the replayed requests actually cost, for reference.
        uncosted: per reason, served requests left out of the cost comparison.
        runtime_shaped: logged decisions that differ from the baseline's re-decision (open
            circuits, demotions, limits or downgrades at the time); None without a baseline.
        transitions: (old model, new model) -> [count, old cost, new cost] for changed rows.
        examples: the first request of each kind of change (most frequent kinds first), to check by hand.
    """

    db: str
    policy: str
    baseline: str | None
    rows: int
    replayed: int
    skipped: Mapping[str, int]
    inexact: Mapping[str, int]
    route_changed: int
    model_changed: int
    plan_changed: int
    newly_refused: Mapping[str, int]
    no_longer_refused: int
    old_cost_usd: float
    new_cost_usd: float
    costed: int
    logged_cost_usd: float
    uncosted: Mapping[str, int]
    runtime_shaped: int | None
    transitions: Sequence[Mapping[str, Any]] = ()
    examples: Sequence[Mapping[str, Any]] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `engine replay --json`."""
        return {
            "db": self.db, "policy": self.policy, "baseline": self.baseline, "rows": self.rows,
            "replayed": self.replayed, "skipped": dict(self.skipped), "inexact": dict(self.inexact),
            "route_changed": self.route_changed, "model_changed": self.model_changed,
            "plan_changed": self.plan_changed, "newly_refused": dict(self.newly_refused),
            "no_longer_refused": self.no_longer_refused, "old_cost_usd": self.old_cost_usd,
            "new_cost_usd": self.new_cost_usd, "cost_delta_usd": self.new_cost_usd - self.old_cost_usd,
            "costed": self.costed, "logged_cost_usd": self.logged_cost_usd, "uncosted": dict(self.uncosted),
            "runtime_shaped": self.runtime_shaped, "transitions": [dict(t) for t in self.transitions],
            "examples": [dict(e) for e in self.examples],
        }


@dataclass(frozen=True, slots=True)
class _Outcome:
    route: str | None
    plan: tuple[str, ...]
    refused: str | None  # no_route | no_model | quota
    reason: str | None

    @classmethod
    def of(cls, d: Decision) -> _Outcome:
        if d.plan:
            return cls(d.route, d.plan, None, None)
        kind = "no_route" if d.route is None else ("quota" if d.quota_refused else "no_model")
        return cls(d.route, (), kind, d.refusal)

    @property
    def model(self) -> str | None:
        return self.plan[0] if self.plan else None


def replay(db_path: str | Path, policy: Policy, *, baseline: Policy | None = None, since: float | None = None,
           examples: int = 10) -> ReplayReport:
    """Re-decide every logged request under `policy` and compare with `baseline` (or the log).

    Args:
        db_path: the decision log.
        policy: the policy to try.
        baseline: the policy that wrote the log; requests it did not decide (another digest)
            are compared with their logged decision.
        since: only requests from this Unix time on.
        examples: how many changed or refused requests to list.

    Raises:
        FileNotFoundError: no file at `db_path`.
    """
    rows = request_rows(db_path, since)
    new, base = _Side.of(policy), (_Side.of(baseline) if baseline is not None else None)
    c: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    inexact: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    uncosted: Counter[str] = Counter()
    trans: dict[tuple[str | None, str | None], list[float]] = {}
    first_of: dict[tuple[str | None, str | None], dict[str, Any]] = {}  # one example per kind of change
    old_cost = new_cost = logged_cost = 0.0
    shaped = 0
    for row in rows:
        if row["outcome"] == "bad_request" or row["prompt_tokens"] is None:
            skipped["bad_request: rejected before routing, nothing to decide"] += 1
            continue
        new.clock.now = row["ts"]
        got, why = _redecide(new, row, baseline)
        old: _Outcome | None = None
        if base is not None and row["policy_digest"] == base.policy.digest:
            base.clock.now = row["ts"]
            old, _ = _redecide(base, row, None)
            logged = _logged(row)
            shaped += old is not None and (old.route, old.plan[:1]) != (logged.route, logged.plan[:1])
        if old is None:
            old = _logged(row)
        if got is None:
            inexact[why or "unknown"] += 1
            continue
        c["replayed"] += 1
        logged_cost += float(row["cost_usd"] or 0.0)
        c["route"] += got.route != old.route
        c["model"] += got.model != old.model
        c["plan"] += got.plan != old.plan
        if got.refused and not old.refused:
            refused[got.refused] += 1
        c["unrefused"] += bool(old.refused and not got.refused)
        oc, nc, miss = _costs(row, old, got, new.compiled, base.policy if base is not None else None)
        if miss:
            uncosted[miss] += 1
        elif oc is not None and nc is not None:
            c["costed"] += 1
            old_cost += oc
            new_cost += nc
        new.charge(row, got.model, nc)
        if base is not None:
            base.charge(row, old.model, oc)
        if got.model != old.model or got.route != old.route:
            t = trans.setdefault((old.model, got.model), [0, 0.0, 0.0])
            t[0] += 1
            t[1] += oc or 0.0
            t[2] += nc or 0.0
            if (old.model, got.model) not in first_of:
                first_of[(old.model, got.model)] = _example(row, old, got, oc, nc)
    ordered = sorted(trans.items(), key=lambda kv: (-kv[1][0], str(kv[0])))
    transitions = [{"old_model": o, "new_model": n, "count": int(v[0]), "old_cost_usd": v[1], "new_cost_usd": v[2]}
                   for (o, n), v in ordered]
    picked = [first_of[k] for k, _ in ordered][:examples]
    return ReplayReport(
        db=str(db_path), policy=policy.source, baseline=baseline.source if baseline is not None else None,
        rows=len(rows), replayed=c["replayed"], skipped=dict(skipped), inexact=dict(inexact),
        route_changed=c["route"], model_changed=c["model"], plan_changed=c["plan"], newly_refused=dict(refused),
        no_longer_refused=c["unrefused"], old_cost_usd=old_cost, new_cost_usd=new_cost, costed=c["costed"],
        logged_cost_usd=logged_cost, uncosted=dict(uncosted), runtime_shaped=shaped if base is not None else None,
        transitions=transitions, examples=picked)


def _logged(row: Mapping[str, Any]) -> _Outcome:
    plan = tuple(row["plan"] or ())
    outcome = row["outcome"]
    if outcome == "refused_quota":
        return _Outcome(row["route"], (), "quota", row["error_message"])
    if outcome in ("refused_policy", "no_model", "rate_limited") and not row["attempts"] or not plan:
        return _Outcome(row["route"], (), "no_route" if row["route"] is None else "no_model", row["error_message"])
    return _Outcome(row["route"], plan, None, None)


def _example(row: Mapping[str, Any], old: _Outcome, got: _Outcome, oc: float | None,
             nc: float | None) -> dict[str, Any]:
    return {"id": row["id"], "ts": row["ts"], "tenant": row["tenant"], "query_type": row["query_type"],
            "old_route": old.route, "old_model": old.model, "new_route": got.route, "new_model": got.model,
            "old_cost_usd": oc, "new_cost_usd": nc, "refusal": got.reason}


def _price(policy: Policy | None, model: str | None, row: Mapping[str, Any]) -> float | None:
    if policy is None or model is None or model not in policy.models:
        return None
    p = policy.models[model].price
    return (int(row["input_tokens"] or 0) * p.input + int(row["output_tokens"] or 0) * p.output) / 1_000_000


def _costs(row: Mapping[str, Any], old: _Outcome, got: _Outcome, compiled: CompiledPolicy,
           baseline: Policy | None) -> tuple[float | None, float | None, str | None]:
    """(old estimate, new estimate, why it is left out of the comparison or None)."""
    policy = compiled.policy
    if row["outcome"] not in ANSWERED:
        return None, None, None  # nothing was served: no tokens to price on either side
    if row["cache_hit"]:
        cached = policy.cache.enabled and _cacheable(compiled, row)
        if cached:
            return 0.0, 0.0, None
        return None, None, "cache hit under the logged policy that the new one would not cache (no token counts)"
    nc = _price(policy, got.model, row) if got.model else 0.0
    # the old side is priced from the baseline, else from the new policy's price list, else as logged
    oc = _price(baseline, old.model, row)
    if oc is None:
        oc = _price(policy, old.model, row)
    if oc is None and old.model is not None and old.model == row["model"]:
        oc = float(row["cost_usd"] or 0.0)
    if oc is None or nc is None:
        return None, None, f"model {old.model!r} has no price in either policy"
    return oc, nc, None


def _cacheable(compiled: CompiledPolicy, row: Mapping[str, Any]) -> bool:
    if row["stream"]:
        return False
    if row.get("seed") is not None and not compiled.policy.cache.seeded:
        return False  # the log says the request set a seed (m002): cached only where the policy allows
    if compiled.cache_when is None:
        return True
    return safe_truth(compiled.cache_when, _features(compiled, row, dict(_fixed_signals(row)), "").env())


# -- rebuilding features ---------------------------------------------------------------------------

def _fixed_signals(row: Mapping[str, Any]) -> Iterator[tuple[str, bool]]:
    for k, v in ((row["features"] or {}).get("signals") or {}).items():
        yield str(k), bool(v)


def _text_based(s: Signal) -> bool:
    return bool(s.regex or s.keywords or s.classify)


def _same_definition(a: Signal, b: Signal) -> bool:
    return (a.regex, a.keywords, a.when, a.classify) == (b.regex, b.keywords, b.when, b.classify)


def _redecide(side: _Side, row: Mapping[str, Any], baseline: Policy | None) -> tuple[_Outcome | None, str | None]:
    """The decision under `side`, or (None, why) when the log cannot settle it."""
    from_text = _from_prompt_text(side.compiled, row)
    if from_text is not None:
        state = side.state(row["tenant"], row["api_key_id"], from_text)
        return _Outcome.of(decide_features(side.compiled, from_text, state)), None
    logged = dict(_fixed_signals(row))
    known: dict[str, bool] = {}
    unknown: list[str] = []
    for name, sig in side.policy.signals.items():
        if not _text_based(sig):
            continue  # expression signals are recomputed from the logged features
        redefined = baseline is not None and name in baseline.signals and not _same_definition(
            sig, baseline.signals[name])
        if name in logged and not redefined:
            known[name] = logged[name]
        else:
            unknown.append(name)
    if len(unknown) > MAX_UNKNOWN_SIGNALS:
        return None, _unknown_reason(unknown, row)
    outcomes: set[_Outcome] = set()
    for values in itertools.product((False, True), repeat=len(unknown)):
        f = _features(side.compiled, row, {**known, **dict(zip(unknown, values, strict=True))}, row["query_type"] or "")
        outcomes.add(_Outcome.of(decide_features(side.compiled, f, side.state(row["tenant"], row["api_key_id"], f))))
        if len(outcomes) > 1:
            return None, _unknown_reason(unknown, row)
    return outcomes.pop(), None


def _unknown_reason(unknown: Sequence[str], row: Mapping[str, Any]) -> str:
    names = ", ".join(repr(n) for n in unknown)
    kept = "only a hash of" if row["prompt_hash"] else "nothing of"
    return (f"signal(s) {names} read the prompt text, which the log does not hold for these requests (it kept "
            f"{kept} the prompt: set log.prompts: full to replay such changes), and the decision depends on them")


def _features(compiled: CompiledPolicy, row: Mapping[str, Any], text_signals: Mapping[str, bool],
              fallback_qt: str) -> Features:
    """Features of a logged request under `compiled`: expression signals recomputed, text ones given."""
    logged = row["features"] or {}
    meta = dict(row["meta"] or {})
    base: dict[str, Any] = {
        "prompt_tokens": int(row["prompt_tokens"]), "max_tokens": int(row["max_tokens"] or 1),
        "temperature": float(row["temperature"] if row["temperature"] is not None else 0.7),
        "stream": bool(row["stream"]), "has_tools": bool(logged.get("has_tools", False)),
        "has_images": bool(logged.get("has_images", False)), "has_system": bool(logged.get("has_system", False)),
    }
    env_values = dict(base)
    for k, v in meta.items():
        env_values["meta." + str(k)] = v
    env = make_env(env_values)
    signals: dict[str, bool] = {}
    for matcher in compiled.signals:
        sig = compiled.policy.signals[matcher.name]
        value = bool(text_signals.get(matcher.name, False)) if _text_based(sig) else matcher("", env, None)
        signals[matcher.name] = value
        env["signals." + matcher.name] = value  # type: ignore[index]
    query_type = compiled.query_types[-1][0] if compiled.query_types else fallback_qt
    for qt, when in compiled.query_types:
        if when is None or safe_truth(when, env):
            query_type = qt
            break
    return Features(query_type=query_type, signals=signals, meta=meta, needs=_logged_needs(row),
                    request_id=str(row["id"]), **base)


def _logged_needs(row: Mapping[str, Any]) -> frozenset[str]:
    """The model features the logged request needed (older rows: from its has_* flags and stream)."""
    column = row.get("needs")  # the decision log's `needs` column (m002 and later)
    if column is not None:
        return frozenset(str(n) for n in column)
    logged = row["features"] or {}
    if "needs" in logged:
        return frozenset(str(n) for n in logged["needs"] or ())
    flags = {"tools": logged.get("has_tools"), "vision": logged.get("has_images"), "streaming": row["stream"]}
    return frozenset(k for k, v in flags.items() if v)


def _from_prompt_text(compiled: CompiledPolicy, row: Mapping[str, Any]) -> Features | None:
    """Exact features from a prompt logged in full (`log.prompts: full`), when it parses back."""
    text = row["prompt"]
    if not text:
        return None
    messages = _parse_prompt(text)
    if not messages:
        return None
    logged = row["features"] or {}
    try:
        request = Request.of(messages=messages, max_tokens=int(row["max_tokens"] or 1),
                             temperature=float(row["temperature"] if row["temperature"] is not None else 0.7),
                             stream=bool(row["stream"]), meta=dict(row["meta"] or {}),
                             has_tools=bool(logged.get("has_tools", False)),
                             has_images=bool(logged.get("has_images", False)), request_id=str(row["id"]))
    except ValueError:
        return None
    request = dataclasses.replace(request, stated_needs=_logged_needs(row))
    f = compiled.features(request)
    # the logged text joins messages with blank lines; if that split them wrongly the token
    # estimate differs from the logged one, and the signals approach is used instead
    return f if f.prompt_tokens == row["prompt_tokens"] else None


def _parse_prompt(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for part in text.split("\n\n"):
        role, sep, content = part.partition(": ")
        if sep and role in _ROLES:
            out.append((role, content))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + "\n\n" + part)
        else:
            return []
    return out

