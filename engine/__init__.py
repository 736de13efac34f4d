"""A policy-driven LLM router.

    from engine import load_policy, compile_policy, Request, explain
    compiled = compile_policy(load_policy("policies/default.yaml"))
    decision = explain(compiled, Request.of("Fix this Python: def f(: pass", meta={"tier": "premium"}))
    print(decision.route, decision.plan)

`Router` (in `engine.runtime`) serves requests end to end on top of the same decision.
Names are resolved lazily so that `import engine` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.errors import (
        AllModelsFailed,
        EngineError,
        PolicyError,
        QuotaExceeded,
        RequestError,
        RoutingRefused,
    )
    from engine.policy.api import analyze_policy, compile_policy, load_policy, load_policy_text
    from engine.policy.compile import CompiledPolicy
    from engine.policy.model import Policy
    from engine.routing.decide import Candidate, Decision, TraceEvent, decide, explain
    from engine.routing.features import Features, Request
    from engine.routing.state import EMPTY_STATE, RuntimeState
    from engine.runtime.result import RoutedCompletion, StreamDone
    from engine.runtime.router import Router

__all__ = [
    "EMPTY_STATE",
    "AllModelsFailed",
    "Candidate",
    "CompiledPolicy",
    "Decision",
    "EngineError",
    "Features",
    "Policy",
    "PolicyError",
    "QuotaExceeded",
    "Request",
    "RequestError",
    "RoutedCompletion",
    "Router",
    "RoutingRefused",
    "RuntimeState",
    "StreamDone",
    "TraceEvent",
    "analyze_policy",
    "compile_policy",
    "decide",
    "explain",
    "load_policy",
    "load_policy_text",
]

_WHERE = {
    "Candidate": "engine.routing.decide", "Decision": "engine.routing.decide", "TraceEvent": "engine.routing.decide",
    "decide": "engine.routing.decide", "explain": "engine.routing.decide",
    "AllModelsFailed": "engine.errors", "EngineError": "engine.errors", "PolicyError": "engine.errors",
    "QuotaExceeded": "engine.errors", "RequestError": "engine.errors", "RoutingRefused": "engine.errors",
    "Features": "engine.routing.features", "Request": "engine.routing.features",
    "analyze_policy": "engine.policy.api", "compile_policy": "engine.policy.api", "load_policy": "engine.policy.api",
    "load_policy_text": "engine.policy.api", "CompiledPolicy": "engine.policy.compile", "Policy": "engine.policy.model",
    "EMPTY_STATE": "engine.routing.state", "RuntimeState": "engine.routing.state", "Router": "engine.runtime.router",
    "RoutedCompletion": "engine.runtime.result", "StreamDone": "engine.runtime.result",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
