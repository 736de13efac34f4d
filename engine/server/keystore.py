"""Client API keys of `engine serve`, kept hashed in an SQLite table (`engine keys ...`).

A key is `sk-rt-` followed by 43 random URL-safe characters (256 bits). It is printed once, at
creation; the table keeps its SHA-256 (a slow password hash buys nothing for a random 256-bit
secret, and a fast one keeps the request path at a microsecond), a short prefix to recognise
it in listings, and a public id (`key_...`) that the decision log and the policy see as
`meta.key`. Each key belongs to a tenant and may carry a tier, free metadata (visible to the
policy as `meta.KEY`), its own quota, an expiry, an allow-list of the `model` values it may ask
for (model names, route names, `auto`), a requests-per-minute rate and a ceiling on requests
in flight at once.

The table lives in its own `CREATE TABLE IF NOT EXISTS`, not in the decision log's numbered
migrations, so the file may be the decision log's or a separate one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from engine.store.sqlite import enable_wal

__all__ = ["KEY_PREFIX", "KeyInfo", "KeyQuota", "KeyStore", "hash_key", "parse_expiry"]

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
# Columns added after the first release; a file created before them gets them on open.
_ADDED = {"expires_at": "REAL", "allow": "TEXT", "rpm": "INTEGER", "max_parallel": "INTEGER"}
_COLUMNS = ("id, prefix, tenant, name, tier, metadata, quota, created_at, revoked_at, expires_at, allow, rpm, "
            "max_parallel")
_UPDATABLE = ("name", "tier", "metadata", "quota", "expires_at", "allow", "rpm", "max_parallel")
QuotaWindow = Literal["minute", "hour", "day", "month"]
_WINDOWS = ("minute", "hour", "day", "month")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, *, now: float | None = None) -> float | None:
    """An expiry as a UNIX time: a duration from now (`12h`, `30d`, `1w`), an ISO date or datetime
    (UTC unless it says otherwise), a UNIX time, or `never` (None).

    Raises:
        ValueError: none of these (the message lists the accepted forms).
    """
    if text.strip().lower() in ("never", "none", ""):
        return None
    now = time.time() if now is None else now
    m = _DURATION.match(text)
    if m:
        return now + float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"cannot read {text!r} as an expiry: use a duration (12h, 30d, 1w), an ISO date or "
                         "datetime (2026-06-30, 2026-06-30T12:00), a UNIX time, or never") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


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
        expires_at: UNIX time after which the key is refused, or None.
        allow: the `model` values requests may name (model names, route names, `auto`); empty: any.
        rpm: requests per minute the key may send (per server process), or None.
        max_parallel: requests the key may have in flight at once (per server process), or None.
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
    expires_at: float | None = None
    allow: tuple[str, ...] = ()
    rpm: int | None = None
    max_parallel: int | None = None

    def expired(self, now: float) -> bool:
        """Whether the key has passed its expiry at `now`."""
        return self.expires_at is not None and now >= self.expires_at

    def as_dict(self) -> dict[str, Any]:
        """JSON view (`engine keys list --format json`, the admin API)."""
        return {"id": self.id, "prefix": self.prefix, "tenant": self.tenant, "name": self.name, "tier": self.tier,
                "metadata": dict(self.metadata), "quota": self.quota.as_dict() if self.quota else None,
                "created_at": self.created_at, "revoked_at": self.revoked_at, "expires_at": self.expires_at,
                "allow": list(self.allow), "rpm": self.rpm, "max_parallel": self.max_parallel}


def _row(r: tuple[Any, ...]) -> KeyInfo:
    quota = json.loads(r[6]) if r[6] else None
    return KeyInfo(id=r[0], prefix=r[1], tenant=r[2], name=r[3], tier=r[4], metadata=json.loads(r[5] or "{}"),
                   quota=KeyQuota.from_dict(quota) if quota else None, created_at=r[7], revoked_at=r[8],
                   expires_at=r[9], allow=tuple(json.loads(r[10] or "[]")), rpm=r[11], max_parallel=r[12])


def _positive_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _allow(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"allow must be a list of model, route names or 'auto', got {value!r}")
    return tuple(dict.fromkeys(value))


def _metadata(md: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(md or {})
    reserved = sorted(set(out) & {"tenant", "key", "tier"})
    if reserved:
        raise ValueError(f"metadata may not set {', '.join(reserved)}: use the key's own tenant/tier")
    try:
        json.dumps(out)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata must be JSON data: {e}") from None
    return out


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
        self._upgrade()

    def _upgrade(self) -> None:
        have = {r[1] for r in self._db.execute("PRAGMA table_info(api_keys)")}
        for column, kind in _ADDED.items():
            if column not in have:
                try:
                    self._db.execute(f"ALTER TABLE api_keys ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise

    def create(self, tenant: str, *, name: str | None = None, tier: str | None = None,
               metadata: Mapping[str, Any] | None = None, quota: KeyQuota | None = None,
               expires_at: float | None = None, allow: tuple[str, ...] | list[str] | None = None,
               rpm: int | None = None, max_parallel: int | None = None) -> tuple[KeyInfo, str]:
        """Make a key; returns it and the secret, which is not kept anywhere.

        Raises:
            ValueError: empty tenant, metadata that is not JSON-able or overrides a reserved name,
                a non-positive rpm or max_parallel, an allow-list that is not a list of names.
        """
        if not tenant or not tenant.strip():
            raise ValueError("a key needs a tenant (e.g. --tenant acme)")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        info = KeyInfo(id="key_" + secrets.token_hex(6), prefix=secret[:12], tenant=tenant.strip(), name=name,
                       tier=tier, metadata=_metadata(metadata), quota=quota, created_at=time.time(),
                       expires_at=expires_at, allow=_allow(allow), rpm=_positive_int("rpm", rpm),
                       max_parallel=_positive_int("max_parallel", max_parallel))
        self._db.execute(
            f"insert into api_keys (hash, {_COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (hash_key(secret), info.id, info.prefix, info.tenant, name, tier, json.dumps(info.metadata),
             json.dumps(quota.as_dict()) if quota else None, info.created_at, None, info.expires_at,
             json.dumps(list(info.allow)) if info.allow else None, info.rpm, info.max_parallel))
        return info, secret

    def get(self, ident: str) -> KeyInfo:
        """A key (active or revoked) by id, or by the whole secret.

        Raises:
            KeyError: no key matches.
        """
        column, value = ("hash", hash_key(ident)) if ident.startswith(KEY_PREFIX) else ("id", ident)
        r = self._db.execute(f"select {_COLUMNS} from api_keys where {column} = ?", (value,)).fetchone()
        if r is None:
            raise KeyError(f"no key {ident!r} (see `engine keys list --all`)")
        return _row(r)

    def update(self, ident: str, **changes: Any) -> KeyInfo:
        """Change an active key's settings: any of name, tier, metadata, quota, expires_at,
        allow, rpm, max_parallel (None clears one). The tenant and the secret never change.

        Raises:
            KeyError: no active key matches.
            ValueError: an unknown setting or a bad value.
        """
        unknown = sorted(set(changes) - set(_UPDATABLE))
        if unknown:
            raise ValueError(f"cannot update {', '.join(unknown)}; settings: {', '.join(_UPDATABLE)}")
        current = self.get(ident)
        if current.revoked_at is not None:
            raise KeyError(f"key {current.id} is revoked; create a new one")
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "metadata":
                values[name] = json.dumps(_metadata(value))
            elif name == "quota":
                values[name] = None if value is None else json.dumps(value.as_dict())
            elif name == "allow":
                allow = _allow(value)
                values[name] = json.dumps(list(allow)) if allow else None
            elif name in ("rpm", "max_parallel"):
                values[name] = _positive_int(name, value)
            elif name == "expires_at":
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ValueError(f"expires_at must be a UNIX time, got {value!r}")
                values[name] = value
            else:
                values[name] = value
        if values:
            sets = ", ".join(f"{k} = ?" for k in values)
            self._db.execute(f"update api_keys set {sets} where id = ?", (*values.values(), current.id))
        return self.get(current.id)

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
