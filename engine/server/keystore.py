"""Client API keys of `engine serve`, kept hashed in an SQLite table (`engine keys ...`).

A key is `sk-rt-` followed by 43 random URL-safe characters (256 bits). It is printed once, at
creation; the table keeps its SHA-256 (a slow password hash buys nothing for a random 256-bit
secret, and a fast one keeps the request path at a microsecond), a short prefix to recognise
it in listings, and a public id (`key_...`) that the decision log and the policy see as
`meta.key`. Each key belongs to a tenant and may carry a tier, free metadata (visible to the
policy as `meta.KEY`) and its own quota.

The table lives in its own `CREATE TABLE IF NOT EXISTS`, not in the decision log's numbered
migrations, so the file may be the decision log's or a separate one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from engine.store.sqlite import enable_wal

__all__ = ["KEY_PREFIX", "KeyInfo", "KeyQuota", "KeyStore", "hash_key"]

KEY_PREFIX = "sk-rt-"
"""How every key starts (so secret scanners and people recognise one)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT,
    tier TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    quota TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""
_COLUMNS = "id, prefix, tenant, name, tier, metadata, quota, created_at, revoked_at"
QuotaWindow = Literal["minute", "hour", "day", "month"]
_WINDOWS = ("minute", "hour", "day", "month")


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyQuota:
    """A key's own budget over a calendar window (UTC), on top of the policy's quotas.

    Attributes:
        window: minute, hour, day or month.
        requests: requests allowed per window.
        tokens: input + output tokens per window.
        cost_usd: spend per window.
    """

    window: QuotaWindow = "day"
    requests: int | None = None
    tokens: int | None = None
    cost_usd: float | None = None

    def __post_init__(self) -> None:
        if self.window not in _WINDOWS:
            raise ValueError(f"quota window must be one of {', '.join(_WINDOWS)}, got {self.window!r}")
        if self.requests is None and self.tokens is None and self.cost_usd is None:
            raise ValueError("a key quota needs at least one of requests, tokens, cost_usd")
        for name in ("requests", "tokens", "cost_usd"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ValueError(f"quota {name} must be a non-negative number, got {v!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON view (set measures only)."""
        d: dict[str, Any] = {"window": self.window}
        for name in ("requests", "tokens", "cost_usd"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KeyQuota:
        """Inverse of `as_dict`."""
        return cls(window=cast(QuotaWindow, d.get("window", "day")), requests=d.get("requests"),
                   tokens=d.get("tokens"), cost_usd=d.get("cost_usd"))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """A client key as stored (never the secret itself).

    Attributes:
        id: public id, used as `meta.key` and in the decision log.
        prefix: the key's first characters, to recognise it.
        tenant: the tenant its requests belong to (quotas, cache and log are per tenant).
        name: a label for people.
        tier: visible to the policy as `meta.tier`.
        metadata: more `meta.KEY` values for the policy.
        quota: the key's own budget, if any.
        created_at: UNIX time of creation.
        revoked_at: UNIX time of revocation, or None while active.
    """

    id: str
    prefix: str
    tenant: str
    name: str | None = None
    tier: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    quota: KeyQuota | None = None
    created_at: float = 0.0
    revoked_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON view (`engine keys list --format json`)."""
        return {"id": self.id, "prefix": self.prefix, "tenant": self.tenant, "name": self.name, "tier": self.tier,
                "metadata": dict(self.metadata), "quota": self.quota.as_dict() if self.quota else None,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def _row(r: tuple[Any, ...]) -> KeyInfo:
    quota = json.loads(r[6]) if r[6] else None
    return KeyInfo(id=r[0], prefix=r[1], tenant=r[2], name=r[3], tier=r[4], metadata=json.loads(r[5] or "{}"),
                   quota=KeyQuota.from_dict(quota) if quota else None, created_at=r[7], revoked_at=r[8])


class KeyStore:
    """The `api_keys` table of one SQLite file.

    Args:
        path: the SQLite file.
        create: create the file when it does not exist; False refuses a missing file (a typo in
            `--db` must not start a server with auth on and no keys).

    Raises:
        FileNotFoundError: `create` is False and there is no such file (the message says what to do).
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        if not create and not Path(path).is_file():
            raise FileNotFoundError(
                f"the key store {path} does not exist: check the path, create a key with `engine keys create "
                f"--db {path} --tenant NAME`, or pass --create to start with an empty one")
        self.path = str(path)
        self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        enable_wal(self._db, 10.0)  # several workers may open a fresh file at once
        self._db.execute(_SCHEMA)

    def create(self, tenant: str, *, name: str | None = None, tier: str | None = None,
               metadata: Mapping[str, Any] | None = None, quota: KeyQuota | None = None) -> tuple[KeyInfo, str]:
        """Make a key; returns it and the secret, which is not kept anywhere.

        Raises:
            ValueError: empty tenant, or metadata that is not JSON-able or overrides a reserved name.
        """
        if not tenant or not tenant.strip():
            raise ValueError("a key needs a tenant (e.g. --tenant acme)")
        md = dict(metadata or {})
        reserved = sorted(set(md) & {"tenant", "key", "tier"})
        if reserved:
            raise ValueError(f"metadata may not set {', '.join(reserved)}: use the key's own tenant/tier")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        info = KeyInfo(id="key_" + secrets.token_hex(6), prefix=secret[:12], tenant=tenant.strip(), name=name,
                       tier=tier, metadata=md, quota=quota, created_at=time.time())
        self._db.execute(
            f"insert into api_keys (hash, {_COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (hash_key(secret), info.id, info.prefix, info.tenant, name, tier, json.dumps(md),
             json.dumps(quota.as_dict()) if quota else None, info.created_at, None))
        return info, secret

    def keys(self, *, include_revoked: bool = False) -> list[KeyInfo]:
        """Keys in creation order."""
        where = "" if include_revoked else " where revoked_at is null"
        return [_row(r) for r in self._db.execute(f"select {_COLUMNS} from api_keys{where} order by created_at")]

    def revoke(self, ident: str) -> KeyInfo:
        """Revoke a key by id (`key_...`), or by the whole secret.

        Raises:
            KeyError: no active key matches.
        """
        column, value = ("hash", hash_key(ident)) if ident.startswith(KEY_PREFIX) else ("id", ident)
        now = time.time()
        cur = self._db.execute(f"update api_keys set revoked_at = ? where {column} = ? and revoked_at is null",
                               (now, value))
        if cur.rowcount == 0:
            raise KeyError(f"no active key {ident!r} (see `engine keys list`)")
        r = self._db.execute(f"select {_COLUMNS} from api_keys where {column} = ?", (value,)).fetchone()
        return _row(r)

    def active(self) -> dict[str, KeyInfo]:
        """Active keys by hash: what the server checks requests against."""
        cur = self._db.execute(f"select hash, {_COLUMNS} from api_keys where revoked_at is null")
        return {r[0]: _row(r[1:]) for r in cur}

    def version(self) -> int:
        """Changes whenever another connection commits to the file (SQLite's `data_version`)."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
