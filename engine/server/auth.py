"""Who is calling: bearer keys checked against the key store, and each key's own quota.

The active keys are held in memory by hash, so checking a request costs one SHA-256 and one
dict lookup. A background task re-reads the table when another process commits to it (`engine
keys create/revoke`), so a new key works and a revoked key stops working within `refresh_s`
without a restart.
"""

from __future__ import annotations

import asyncio
import logging
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

__all__ = ["ANONYMOUS", "Authenticator", "KeyQuotas", "Principal"]

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
    """

    tenant: str
    key_id: str | None = None
    tier: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    quota: KeyQuota | None = None

    @classmethod
    def of(cls, info: KeyInfo) -> Principal:
        """The principal of a stored key."""
        return cls(info.tenant, info.id, info.tier, dict(info.metadata), info.quota)


ANONYMOUS = Principal("anonymous")
"""Every caller when the server runs without a key store (`--no-auth`, or loopback only)."""

_MISSING = ("You didn't provide an API key. Send it in an Authorization header using Bearer auth "
            "(Authorization: Bearer YOUR_KEY); create one with `engine keys create --db FILE --tenant NAME`.")


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

    def refresh(self) -> bool:
        """Re-read the key table if it changed; True when it did."""
        if self.store is None:
            return False
        version = self.store.version()
        if version == self._version:
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
