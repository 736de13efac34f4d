"""Who is calling: bearer keys checked against the key store, and each key's own quota.

The active keys are held in memory by hash, so checking a request costs one SHA-256 and one
dict lookup. A background task re-reads the table when another process commits to it (`engine
keys create/revoke`), so a new key works and a revoked key stops working within `refresh_s`
without a restart.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import QuotaExceeded
from engine.policy.model import Quota, QuotaLimit
from engine.runtime.clock import Clock, SystemClock
from engine.runtime.quotas import QuotaContext, QuotaManager, Reservation
from engine.server.keystore import KeyInfo, KeyQuota, KeyStore, hash_key
from engine.server.openai_wire import WireError

__all__ = ["ANONYMOUS", "Authenticator", "KeyLimits", "KeyQuotas", "Principal"]

log = logging.getLogger("engine.server")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request, as the policy and the log see it.

    Attributes:
        tenant: `meta.tenant`; quotas, cache and log rows are per tenant.
        key_id: `meta.key` (the key's public id), None when auth is off.
        tier: `meta.tier`.
        metadata: more `meta.KEY` values from the key.
        quota: the key's own budget.
        expires_at: when the key stops working (UNIX time), or None.
        allow: the `model` values the key may ask for (empty: any).
        rpm: the key's requests per minute (per process), or None.
        max_parallel: the key's requests in flight at once (per process), or None.
    """

    tenant: str
    key_id: str | None = None
    tier: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    quota: KeyQuota | None = None
    expires_at: float | None = None
    allow: tuple[str, ...] = ()
    rpm: int | None = None
    max_parallel: int | None = None

    @classmethod
    def of(cls, info: KeyInfo) -> Principal:
        """The principal of a stored key."""
        return cls(info.tenant, info.id, info.tier, dict(info.metadata), info.quota, info.expires_at, info.allow,
                   info.rpm, info.max_parallel)

    def check_model(self, model: str) -> None:
        """Refuse a `model` value outside the key's allow-list.

        Raises:
            WireError: 403 `model_not_allowed`.
        """
        if self.allow and model not in self.allow:
            raise WireError(403, f"This API key may not use the model `{model}`; it may use: "
                            f"{', '.join(self.allow)} (change it with `engine keys update {self.key_id} --allow`).",
                            type="permission_error", param="model", code="model_not_allowed")


ANONYMOUS = Principal("anonymous")
"""Every caller when the server runs without a key store (`--no-auth`, or loopback only)."""

_MISSING = ("You didn't provide an API key. Send it in an Authorization header using Bearer auth "
            "(Authorization: Bearer YOUR_KEY); create one with `engine keys create --db FILE --tenant NAME`.")


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _masked(key: str) -> str:
    return key[:6] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)


class Authenticator:
    """Maps `Authorization: Bearer KEY` (or `api-key`/`x-api-key` headers) to a `Principal`.

    Args:
        store: the key store, or None to let every request in as `ANONYMOUS`.
        refresh_s: how often to look for changes to the key table.
    """

    def __init__(self, store: KeyStore | None, *, refresh_s: float = 1.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._keys: dict[str, Principal] = {}
        self._version = -1
        if store is not None:
            self.refresh()

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return self.store is not None

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the key table if it changed (or `force`: after a change on this connection,
        which SQLite's data_version does not count); True when it was re-read."""
        if self.store is None:
            return False
        version = self.store.version()
        if version == self._version and not force:
            return False
        self._keys = {h: Principal.of(info) for h, info in self.store.active().items()}
        self._version = version
        return True

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal of a request's headers.

        Raises:
            WireError: 401 `invalid_api_key` when the key is missing, unknown or revoked.
        """
        if self.store is None:
            return ANONYMOUS
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, key = auth.partition(" ")
            key = key.strip() if scheme.lower() == "bearer" else ""
        else:
            key = headers.get("api-key") or headers.get("x-api-key") or ""
        if not key:
            raise WireError(401, _MISSING, code="invalid_api_key", headers={"www-authenticate": "Bearer"})
        principal = self._keys.get(hash_key(key))
        if principal is None:
            raise WireError(401, f"Incorrect API key provided: {_masked(key)}. Check the key, or create one with "
                            "`engine keys create`; revoked keys are refused.", code="invalid_api_key",
                            headers={"www-authenticate": "Bearer"})
        if principal.expires_at is not None and time.time() >= principal.expires_at:
            raise WireError(401, f"The API key {principal.key_id} expired at {_utc(principal.expires_at)}; extend it "
                            f"with `engine keys update {principal.key_id} --expires ...` or create a new one.",
                            code="expired_api_key", headers={"www-authenticate": "Bearer"})
        return principal

    async def watch(self) -> None:
        """Poll the key table until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                if self.refresh():
                    log.info("api keys reloaded: %d active", len(self._keys))
            except Exception as e:  # a locked or vanished file must not kill the watcher
                log.warning("could not re-read the api keys: %s", e)


class KeyLimits:
    """Each key's requests per minute and requests in flight, counted in this process.

    A request over either gets 429 at once rather than waiting: the caller's own retry logic
    (with the Retry-After given) is the right place to wait. With several workers each counts
    on its own, so a key may reach `workers` times its figures (docs/service.md).
    """

    def __init__(self) -> None:
        self._limiters: dict[tuple[str, int], Any] = {}
        self._inflight: dict[str, int] = {}

    async def enter(self, who: Principal) -> bool:
        """Count a request of `who` in; True when it must be `leave`-d at its end.

        Raises:
            WireError: 429 `rate_limit_exceeded` (rpm) or `too_many_parallel_requests`.
        """
        if who.key_id is None:
            return False
        if who.rpm is not None:
            from aiolimiter import AsyncLimiter

            limiter = self._limiters.get((who.key_id, who.rpm))
            if limiter is None:
                limiter = self._limiters[(who.key_id, who.rpm)] = AsyncLimiter(who.rpm, 60)
            if not limiter.has_capacity():
                wait = math.ceil(60 / who.rpm)
                raise WireError(429, f"This API key is limited to {who.rpm} requests per minute; retry in {wait} s.",
                                type="rate_limit_error", code="rate_limit_exceeded", headers={"retry-after": str(wait)})
            await limiter.acquire()  # there is room (just checked): this takes it without waiting
        if who.max_parallel is None:
            return False
        n = self._inflight.get(who.key_id, 0)
        if n >= who.max_parallel:
            raise WireError(429, f"This API key may have {who.max_parallel} request(s) in flight at once; wait for "
                            "one to finish.", type="rate_limit_error", code="too_many_parallel_requests",
                            headers={"retry-after": "1"})
        self._inflight[who.key_id] = n + 1
        return True

    def leave(self, who: Principal) -> None:
        """The end of a request that `enter` counted."""
        assert who.key_id is not None
        n = self._inflight.get(who.key_id, 0) - 1
        if n > 0:
            self._inflight[who.key_id] = n
        else:
            self._inflight.pop(who.key_id, None)


class KeyQuotas:
    """Budgets of individual keys, counted in an SQLite file shared by every worker.

    A request is admitted when its key's counters are below every limit; the request count is
    reserved atomically (never overshoots) while tokens and cost are added once known, so those
    may end above a limit by what the key's requests already in flight spend.

    Args:
        path: the SQLite file (the key store's).
        clock: time source of the calendar windows.
    """

    def __init__(self, path: str | Path | None, *, clock: Clock | None = None) -> None:
        self._path = path
        self._clock = clock or SystemClock()
        self._managers: dict[KeyQuota, QuotaManager] = {}

    def _manager(self, quota: KeyQuota) -> QuotaManager:
        m = self._managers.get(quota)
        if m is None:
            limit = QuotaLimit(cost_usd=quota.cost_usd, tokens=quota.tokens, requests=quota.requests)
            rule = Quota(name=f"key-{quota.window}", scope=("key",), window=quota.window, limit=limit)
            m = self._managers[quota] = QuotaManager([rule], path=self._path, clock=self._clock)
        return m

    async def admit(self, who: Principal) -> Reservation | None:
        """Reserve one request on the key's budget (None when the key has none).

        Raises:
            QuotaExceeded: the key's budget for this window is spent.
        """
        if who.quota is None:
            return None
        ctx = QuotaContext(who.tenant, who.key_id, "*", "*")
        return await self._manager(who.quota).areserve(ctx, 0, 0.0)

    async def settle(self, who: Principal, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Add what the request really used."""
        assert who.quota is not None
        await self._manager(who.quota).asettle(reservation, tokens, cost_usd)

    def close(self) -> None:
        """Close every manager's connections."""
        for m in self._managers.values():
            m.close()
        self._managers.clear()


def quota_retry_after(err: QuotaExceeded, now: float) -> str:
    """Seconds until a quota's window resets, for Retry-After (at least 1)."""
    return str(max(1, int(err.resets_at - now + 0.999)))
