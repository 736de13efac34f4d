"""Pick the state implementations a policy asks for (`state.backend`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.policy.model import Policy
from engine.runtime.cache import ResponseCache
from engine.runtime.clock import Clock
from engine.runtime.health import HealthEvent, HealthTracker
from engine.runtime.limits import RateLimits
from engine.runtime.quotas import QuotaManager
from engine.runtime.scoped_limits import ScopedLimits

__all__ = ["StateParts", "build_state", "unshared_limits"]


@dataclass(slots=True)
class StateParts:
    """The runtime state of one router, on whichever backend the policy chose."""

    backend: str
    health: HealthTracker
    limits: RateLimits | None
    quotas: QuotaManager | None
    cache: ResponseCache | None
    scoped: ScopedLimits | None
    conn: Any = None
    """The `RedisConn` with `backend: redis`, else None."""

    def status(self) -> dict[str, Any]:
        """The backend and, for Redis, whether it is reachable (for /readyz and /metrics)."""
        if self.conn is None:
            return {"backend": self.backend, "connected": True}
        status: dict[str, Any] = self.conn.status()
        return status

    async def aclose(self) -> None:
        """Stop background work and close connections (the caches and ledgers close with the router)."""
        if self.conn is None:
            return
        from engine.runtime.backends.redis_cache import RedisResponseCache
        from engine.runtime.backends.redis_health import RedisHealth
        from engine.runtime.backends.redis_quotas import RedisQuotaManager

        if isinstance(self.health, RedisHealth):
            await self.health.aclose()
        if isinstance(self.cache, RedisResponseCache):
            await self.cache.flush()
        if isinstance(self.quotas, RedisQuotaManager):
            await self.quotas.aflush()
        await self.conn.aclose()


def _has_limits(policy: Policy) -> bool:
    return any(p.limits.rpm or p.limits.tpm or p.limits.concurrency for p in policy.providers.values()) or \
        any(m.limits.rpm or m.limits.tpm or m.limits.concurrency for m in policy.models.values())


def build_state(policy: Policy, *, clock: Clock, quota_path: str | Path | None, cache_path: str | Path | None,
                on_health: Callable[[HealthEvent], None] | None = None) -> StateParts:
    """The health tracker, limiters, quota ledger, cache and scoped limits for `policy`.

    Args:
        policy: the policy; `policy.state` picks the backend.
        clock: the router's clock.
        quota_path: SQLite file of the embedded quota ledger (None: in memory).
        cache_path: SQLite file of an embedded `backend: sqlite` cache.
        on_health: receives health events.
    """
    st = policy.state
    cache_on = policy.cache.enabled and (policy.cache.backend == "memory" or cache_path is not None)
    scoped = ScopedLimits(policy.limits, clock=clock) if policy.limits else None
    if st.backend != "redis":
        return StateParts(
            backend="embedded",
            health=HealthTracker(policy.health, policy.models, clock=clock, on_event=on_health),
            limits=RateLimits(policy.providers, policy.models) if _has_limits(policy) else None,
            quotas=QuotaManager(policy.quotas, path=quota_path, clock=clock) if policy.quotas else None,
            cache=ResponseCache(policy.cache, clock=clock, path=cache_path) if cache_on else None,
            scoped=scoped)
    from engine.runtime.backends.redis_cache import RedisResponseCache
    from engine.runtime.backends.redis_conn import RedisConn
    from engine.runtime.backends.redis_health import RedisHealth
    from engine.runtime.backends.redis_limits import RedisRateLimits, RedisScopedLimits
    from engine.runtime.backends.redis_quotas import RedisQuotaManager

    conn = RedisConn(st)
    ttl = st.reservation_ttl_s if st.reservation_ttl_s is not None else policy.deadline_s + 60.0
    return StateParts(
        backend="redis",
        health=RedisHealth(policy.health, policy.models, clock=clock, conn=conn, on_event=on_health),
        limits=RedisRateLimits(policy.providers, policy.models, conn=conn,
                               fallback_local=st.on_failure.limits == "local") if _has_limits(policy) else None,
        quotas=RedisQuotaManager(policy.quotas, conn=conn, clock=clock, reservation_ttl_s=ttl,
                                 fail_closed=st.on_failure.quotas == "reject") if policy.quotas else None,
        cache=RedisResponseCache(policy.cache, clock=clock, conn=conn, lock_s=min(policy.deadline_s, 30.0))
        if policy.cache.enabled else None,
        scoped=RedisScopedLimits(scoped, conn=conn) if scoped is not None else None,
        conn=conn)


def unshared_limits(policy: Policy, *, log_db: str | None) -> list[str]:
    """What several processes on the embedded backend would each count on their own (empty: safe to fork).

    Quotas are shared through the SQLite file when there is one; rpm/tpm limits (provider, model and
    `limits:` entries) live in each process, so N workers would let through N times each limit.
    """
    if policy.state.backend != "embedded":
        return []
    out: list[str] = []
    for owner, lim in [*((f"provider {n}", p.limits) for n, p in policy.providers.items()),
                       *((f"model {n}", m.limits) for n, m in policy.models.items())]:
        for measure in ("rpm", "tpm"):  # concurrency is per process on every backend: it bounds own connections
            value = getattr(lim, measure)
            if value:
                out.append(f"{owner} {measure} {value}")
    out += [f"limits entry {lim.name!r}" for lim in policy.limits]
    if policy.quotas and not (log_db or policy.log.sqlite):
        out += [f"quota {q.name!r} (no log.sqlite file to share it through)" for q in policy.quotas]
    return out
