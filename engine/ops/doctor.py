"""Startup checks: can every provider of a policy be called, with these keys, from here?

    checks = await diagnose(policy)          # one `Check` per model of the policy
    failed = [c for c in checks if c.status == "fail"]

Each provider's first model is probed with its adapter's `probe()` (the vendor's cheapest
authenticated call naming the model: a models retrieve or list, which generates nothing and
costs nothing). When that shows the key refused or the host unreachable, the provider's other
models are not called again (they would fail the same way); otherwise each is probed for its
model id. `engine doctor` prints the result as a table; `engine serve --check` refuses to start
on a failure; `/readyz` can require the latest check to pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from engine.policy.model import Model, Policy

__all__ = ["Check", "CheckStatus", "diagnose", "summary"]

CheckStatus = Literal["ok", "warn", "fail", "skipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """The outcome of probing one model of the policy.

    Attributes:
        provider: the policy's provider name.
        adapter: its adapter kind.
        model: the policy's model name.
        model_id: the vendor's id of it.
        status: ok; warn (reached and the key accepted, but the vendor is rate limiting or
            overloaded); fail; skipped (its provider already failed on credentials or reachability).
        problem: what failed, in one or two words: credentials, unreachable, timeout,
            model not found, configuration, vendor error (empty when ok).
        detail: the vendor's or adapter's message, short and scrubbed of secrets.
        latency_ms: how long the probe took (None when not probed).
    """

    provider: str
    adapter: str
    model: str
    model_id: str
    status: CheckStatus
    problem: str = ""
    detail: str = ""
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The check as plain JSON data."""
        return asdict(self)


_PROVIDER_WIDE = frozenset(("credentials", "unreachable", "configuration"))
_DETAIL_CHARS = 200


def _classify(e: BaseException) -> tuple[CheckStatus, str, str]:
    from adapters.errors import (
        AuthError,
        ConnectionFailed,
        InvalidInput,
        Overloaded,
        ProviderError,
        RateLimited,
        Timeout,
    )

    message = getattr(e, "message", None) or str(e)
    detail = " ".join(str(message).split())
    if len(detail) > _DETAIL_CHARS:
        detail = detail[: _DETAIL_CHARS - 3] + "..."
    status = getattr(e, "status", None)
    if isinstance(e, AuthError):
        why = f"the key was refused (HTTP {status})" if status else "no usable key"
        return "fail", "credentials", f"{why}: {detail}"
    if isinstance(e, ConnectionFailed):
        return "fail", "unreachable", detail
    if isinstance(e, Timeout):
        return "fail", "timeout", detail
    if isinstance(e, (RateLimited, Overloaded)):
        return "warn", "rate limited" if isinstance(e, RateLimited) else "overloaded", detail
    if isinstance(e, ProviderError) and status == 404:
        return "fail", "model not found", detail
    if isinstance(e, ProviderError):
        return "fail", "vendor error", f"{type(e).__name__}: {detail}"
    if isinstance(e, (InvalidInput, ImportError)):
        return "fail", "configuration", detail
    return "fail", "error", f"{type(e).__name__}: {detail}"


async def _probe(policy: Policy, model: Model, timeout_s: float) -> Check:
    from adapters.base import Price
    from adapters.registry import build_adapter

    p = policy.providers[model.provider]
    base = dict(provider=p.name, adapter=p.adapter, model=model.name, model_id=model.id)
    started = time.perf_counter()
    adapter = None
    try:
        adapter = build_adapter(p.adapter, provider=p.name, model=model.id, api_key=p.api_key, base_url=p.base_url,
                                timeout_s=p.timeout_s, price=Price(model.price.input, model.price.output),
                                options=p.options)
        await adapter.probe(timeout_s=min(timeout_s, p.timeout_s))
    except Exception as e:  # every failure is a row of the table, never a crash of the check
        status, problem, detail = _classify(e)
        return Check(**base, status=status, problem=problem, detail=detail,
                     latency_ms=(time.perf_counter() - started) * 1000)
    finally:
        if adapter is not None:
            await adapter.aclose()
    return Check(**base, status="ok", latency_ms=(time.perf_counter() - started) * 1000)


async def diagnose(policy: Policy, *, timeout_s: float = 10.0) -> list[Check]:
    """Probe every model of `policy`; one `Check` per model, in policy order.

    Args:
        policy: the loaded policy.
        timeout_s: the longest one probe may take (the provider's own `timeout_s` if shorter).
    """
    by_provider: dict[str, list[Model]] = {}
    for m in policy.models.values():
        by_provider.setdefault(m.provider, []).append(m)

    # Each provider's first probe runs alone: it imports the vendor's SDK, which holds the event
    # loop for a second or more and would eat into the timeout of any probe running beside it.
    checks: dict[str, Check] = {}
    rest: list[Model] = []
    for models in by_provider.values():
        first = checks[models[0].name] = await _probe(policy, models[0], timeout_s)
        if first.problem in _PROVIDER_WIDE:
            for m in models[1:]:
                checks[m.name] = Check(provider=m.provider, adapter=first.adapter, model=m.name, model_id=m.id,
                                       status="skipped", problem=first.problem, detail=f"as {models[0].name}")
        else:
            rest += models[1:]
    for check in await asyncio.gather(*(_probe(policy, m, timeout_s) for m in rest)):
        checks[check.model] = check
    return [checks[name] for name in policy.models]


def summary(checks: Sequence[Check]) -> str:
    """One line: how many models are ready and which providers fail, and why."""
    failing: dict[str, str] = {}
    for c in checks:
        if c.status == "fail":
            failing.setdefault(c.provider, c.problem)
    ok = sum(c.status in ("ok", "warn") for c in checks)
    head = f"{ok} of {len(checks)} model{'s' if len(checks) != 1 else ''} ready"
    if not failing:
        return head
    return head + "; failing: " + ", ".join(f"{p} ({why})" for p, why in failing.items())
