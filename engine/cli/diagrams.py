"""Mermaid sequence diagrams of a request's plan (`engine explain --mermaid`).

`decision_sequence` draws what the runtime would do with one decision: features and the
decision, the cache and quota steps the policy enables, then each model of the plan in turn:
its call, its retries on transient errors, and the fallback to the next model when it cannot
answer, down to `AllModelsFailed` after the last one. A refused request ends at the refusal.
`docs/routing.md` explains the flows the diagram is made of.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from engine.policy.compile import CompiledPolicy
from engine.routing.decide import Decision
from engine.routing.features import safe_truth

__all__ = ["decision_sequence", "mermaid_text"]

_ESCAPES = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", "\n": " ", "\r": " "}
_ESCAPE = re.compile("[#;<>\r\n]")
_MAX_TEXT = 160
_MAX_EXCLUDED = 6


def mermaid_text(text: str, limit: int = _MAX_TEXT) -> str:
    """`text` made safe for a mermaid message or note: entity codes for `# ; < >`, one line, bounded."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], text)


def decision_sequence(decision: Decision, compiled: CompiledPolicy) -> str:
    """The mermaid `sequenceDiagram` of `decision`'s plan under `compiled`.

    Args:
        decision: what `decide` returned for the request.
        compiled: the policy that decided (for retry, timeouts, cache and quota settings).
    """
    policy = compiled.policy
    f = decision.features
    lines = ["sequenceDiagram", "    autonumber", "    participant App", "    participant Router",
             "    participant Policy as Policy (decide)"]
    quotas = bool(policy.quotas)
    if quotas:
        lines.append("    participant Quotas")
    alias: dict[str, str] = {}
    for i, name in enumerate(decision.plan, 1):
        alias[name] = f"M{i}"
        provider = policy.models[name].provider if name in policy.models else "?"
        lines.append(f"    participant M{i} as {mermaid_text(name, 60)} ({mermaid_text(provider, 60)})")
    meta = " ".join(f"{k}={v}" for k, v in _short_meta(f.meta).items())
    lines.append(f"    App->>Router: {'stream' if f.stream else 'generate'}: ~{f.prompt_tokens} tokens in, "
                 f"max_tokens {f.max_tokens}, temperature {f.temperature:g}" + (f", {mermaid_text(meta, 80)}"
                                                                                 if meta else ""))
    signals = ", ".join(k for k, v in f.signals.items() if v) or "none"
    lines.append(f"    Router->>Policy: features (query type {mermaid_text(f.query_type, 40)}, "
                 f"signals {mermaid_text(signals, 80)}) and health, limits, quotas")
    if decision.route is None:
        lines.append("    Note over Policy: no route matched")
    else:
        cr = next((r for r in compiled.routes if r.route.name == decision.route), None)
        cond = cr.when.text if cr is not None and cr.when is not None else "no condition"
        strategy = cr.route.strategy if cr is not None else "?"
        lines.append(f"    Note over Policy: route {mermaid_text(decision.route, 60)} "
                     f"({mermaid_text(cond, 100)}), strategy {strategy}")
    excluded = [c for c in decision.candidates if not c.eligible]
    for c in excluded[:_MAX_EXCLUDED]:
        lines.append(f"    Note over Policy: excluded {mermaid_text(c.model, 60)}: {mermaid_text(c.reason or '?')}")
    if len(excluded) > _MAX_EXCLUDED:
        lines.append(f"    Note over Policy: and {len(excluded) - _MAX_EXCLUDED} more excluded")
    if not decision.plan:
        lines.append(f"    Policy-->>Router: empty plan: {mermaid_text(decision.refusal or 'refused')}")
        error = "QuotaExceeded" if decision.quota_refused else "RoutingRefused"
        lines.append(f"    Router--xApp: {error} (nothing sent to any model)")
        return "\n".join(lines) + "\n"
    lines.append(f"    Policy-->>Router: plan {mermaid_text(' then '.join(decision.plan), 200)}"
                 + (" (downgraded by a quota)" if decision.downgraded else ""))
    if _cacheable(decision, compiled):
        lines += ["    opt response cache (policy cache.when holds)",
                  "        Router->>Router: look up the normalised request (scope " + policy.cache.scope + ")",
                  "        Router-->>App: cached response on a hit (no model called, cost 0)", "    end"]
    est = {c.model: c.est_cost_usd for c in decision.candidates}
    _model_blocks(lines, decision, compiled, alias, est, 0, quotas)
    return "\n".join(lines) + "\n"


def _model_blocks(lines: list[str], decision: Decision, compiled: CompiledPolicy, alias: Mapping[str, str],
                  est: Mapping[str, float], index: int, quotas: bool) -> None:
    """Append the block of plan[index], with the next models nested in its failure branch."""
    policy = compiled.policy
    name = decision.plan[index]
    m, pad = alias[name], "    " * (index + 1)
    model = policy.models.get(name)
    timeout = policy.providers[model.provider].timeout_s if model is not None else 30.0
    attempts = policy.retry.max_attempts
    if index > 0:
        lines.append(f"{pad}Note over Router,{m}: fall back to {mermaid_text(name, 60)}")
    if quotas:
        lines.append(f"{pad}Router->>Quotas: reserve the estimate (${est.get(name, 0.0):.6f}, "
                     "prompt + max_tokens)")
    lines.append(f"{pad}Router->>{m}: call (timeout {timeout:g} s, request deadline {policy.deadline_s:g} s)")
    if attempts > 1:
        lines += [f"{pad}loop transient error (Timeout, ServerError, Overloaded), up to {attempts} attempts",
                  f"{pad}    {m}--xRouter: transient error",
                  f"{pad}    Router->>{m}: retry after backoff ({policy.retry.backoff_ms:g} ms doubling, "
                  f"at most {policy.retry.max_backoff_ms:g} ms, at least Retry-After)",
                  f"{pad}end"]
    lines.append(f"{pad}alt {mermaid_text(name, 60)} answers")
    lines.append(f"{pad}    {m}-->>Router: completion (tokens, cost)")
    if quotas:
        lines.append(f"{pad}    Router->>Quotas: settle with the actual usage")
    lines.append(f"{pad}    Router-->>App: response from {mermaid_text(name, 60)}, logged with its attempts")
    last = index == len(decision.plan) - 1
    why = "no answer: RateLimited, ContextTooLong, AuthError, retries used up, circuit open or limiter full"
    lines.append(f"{pad}else {why}")
    lines.append(f"{pad}    {m}--xRouter: error (recorded in health)")
    if quotas:
        lines.append(f"{pad}    Router->>Quotas: release the reservation")
    if last:
        lines.append(f"{pad}    Router--xApp: AllModelsFailed, every attempt listed (the request is logged)")
    else:
        _model_blocks(lines, decision, compiled, alias, est, index + 1, quotas)
    lines.append(f"{pad}end")


def _cacheable(decision: Decision, compiled: CompiledPolicy) -> bool:
    policy = compiled.policy
    if not policy.cache.enabled or decision.features.stream:
        return False
    return compiled.cache_when is None or safe_truth(compiled.cache_when, decision.features.env())


def _short_meta(meta: Mapping[str, object]) -> dict[str, str]:
    return {str(k): str(v)[:30] for k, v in list(meta.items())[:4]}
