"""`engine keys create|list|revoke`: client keys of `engine serve`."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING

import click

from engine.cli.common import EXIT_INVALID, parse_meta

if TYPE_CHECKING:
    from engine.server.keystore import KeyStore

_DB = click.option("--db", "db", required=True, type=click.Path(dir_okay=False), envvar="ENGINE_KEYS_DB",
                   help="SQLite file of the keys (the one `engine serve --db` reads). [env: ENGINE_KEYS_DB]")
_EXPIRES = click.option("--expires", default=None, metavar="WHEN",
                        help="When the key stops working: a duration (12h, 30d), an ISO date, or never.")
_ALLOW = click.option("--allow", multiple=True, metavar="NAMES",
                      help="`model` values the key may ask for: model names, route names, auto (repeat or "
                           "comma-separate; default: any).")
_RPM = click.option("--rpm", type=click.IntRange(1), default=None, help="Requests per minute (per server process).")
_PARALLEL = click.option("--max-parallel", type=click.IntRange(1), default=None,
                         help="Requests in flight at once (per server process).")
_CREATE = click.option("--create", is_flag=True, help="Create the key store if FILE does not exist (else refused).")
_FORMAT = click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty", show_default=True)


@click.group("keys", context_settings={"help_option_names": ["-h", "--help"]})
def keys_group() -> None:
    """Create, list, update and revoke the API keys clients send to `engine serve`.

    \b
    Example:
      engine keys create --db keys.db --tenant acme --tier premium --name "acme backend"
      engine keys list --db keys.db
      engine keys update --db keys.db key_3f9a1c2b7d4e --expires 30d --allow auto --rpm 600
      engine keys revoke --db keys.db key_3f9a1c2b7d4e

    A key is printed once, at creation; only its hash is stored. The server notices new and
    revoked keys within a second, without a restart.
    """


@keys_group.command("create")
@_DB
@click.option("--tenant", "-t", required=True, help="Tenant the key's requests belong to (quotas, cache, log).")
@click.option("--name", "-n", default=None, help="A label for people.")
@click.option("--tier", default=None, help="Visible to the policy as meta.tier.")
@click.option("--meta", "-m", multiple=True, metavar="KEY=VALUE", help="More meta.KEY values for the policy.")
@click.option("--quota-window", type=click.Choice(["minute", "hour", "day", "month"]), default="day",
              show_default=True, help="Calendar window (UTC) of the key's own quota.")
@click.option("--quota-requests", type=click.IntRange(0), default=None, help="Requests per window.")
@click.option("--quota-tokens", type=click.IntRange(0), default=None, help="Tokens (input + output) per window.")
@click.option("--quota-cost", type=click.FloatRange(0), default=None, help="Spend in USD per window.")
@_EXPIRES
@_ALLOW
@_RPM
@_PARALLEL
@_FORMAT
def create_cmd(db: str, tenant: str, name: str | None, tier: str | None, meta: tuple[str, ...], quota_window: str,
               quota_requests: int | None, quota_tokens: int | None, quota_cost: float | None, expires: str | None,
               allow: tuple[str, ...], rpm: int | None, max_parallel: int | None, fmt: str) -> None:
    """Create a key and print it (once)."""
    from engine.server.keystore import KeyQuota, KeyStore

    quota = None
    if quota_requests is not None or quota_tokens is not None or quota_cost is not None:
        quota = KeyQuota(window=quota_window, requests=quota_requests, tokens=quota_tokens,  # type: ignore[arg-type]
                         cost_usd=quota_cost)
    expires_at = _expiry(expires) if expires is not None else None
    store = KeyStore(db)
    try:
        info, secret = store.create(tenant, name=name, tier=tier, metadata=parse_meta(meta), quota=quota,
                                    expires_at=expires_at, allow=_names(allow), rpm=rpm, max_parallel=max_parallel)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps({**info.as_dict(), "key": secret}))
    else:
        click.echo(secret)
        click.echo(f"created {info.id} for tenant {info.tenant!r}; store the key now, it is not shown again.",
                   err=True)


def _expiry(text: str) -> float | None:
    from engine.server.keystore import parse_expiry

    try:
        return parse_expiry(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--expires") from None


def _names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _open(db: str, create: bool) -> KeyStore:
    from engine.server.keystore import KeyStore

    try:
        return KeyStore(db, create=create)
    except FileNotFoundError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(EXIT_INVALID) from None


@keys_group.command("list")
@_DB
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@_CREATE
@_FORMAT
def list_cmd(db: str, include_revoked: bool, create: bool, fmt: str) -> None:
    """List keys (never the secrets)."""
    store = _open(db, create)
    try:
        keys = store.keys(include_revoked=include_revoked)
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([k.as_dict() for k in keys], indent=2))
        return
    if not keys:
        click.echo("no keys" + ("" if include_revoked else " (--all shows revoked ones)"), err=True)
        return
    rows = [("ID", "PREFIX", "TENANT", "TIER", "NAME", "METADATA", "ALLOW", "LIMITS", "QUOTA", "CREATED", "EXPIRES",
             "REVOKED")]
    now = time.time()
    for k in keys:
        quota = "" if k.quota is None else " ".join(f"{n}={v}" for n, v in k.quota.as_dict().items())
        metadata = " ".join(f"{n}={v}" for n, v in k.metadata.items())
        limits = " ".join(x for x in (f"rpm={k.rpm}" if k.rpm else "",
                                      f"parallel={k.max_parallel}" if k.max_parallel else "") if x)
        expires = "" if k.expires_at is None else _when(k.expires_at) + (" (expired)" if k.expired(now) else "")
        rows.append((k.id, k.prefix + "...", k.tenant, k.tier or "", k.name or "", metadata, ",".join(k.allow),
                     limits, quota, _when(k.created_at), expires, _when(k.revoked_at) if k.revoked_at else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@keys_group.command("revoke")
@_DB
@click.argument("key_id")
def revoke_cmd(db: str, key_id: str) -> None:
    """Revoke KEY_ID (`key_...`, or the key itself); a running server refuses it within a second."""
    store = _open(db, False)
    try:
        info = store.revoke(key_id)
    except KeyError as e:
        click.echo(f"error: {e.args[0]}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    finally:
        store.close()
    click.echo(f"revoked {info.id} (tenant {info.tenant!r})")


@keys_group.command("update")
@_DB
@click.argument("key_id")
@click.option("--name", "-n", default=None, help="A new label.")
@click.option("--tier", default=None, help="A new meta.tier.")
@click.option("--meta", "-m", multiple=True, metavar="KEY=VALUE", help="Set meta.KEY (other metadata is kept).")
@click.option("--unset-meta", multiple=True, metavar="KEY", help="Remove meta.KEY.")
@_EXPIRES
@_ALLOW
@click.option("--allow-any", is_flag=True, help="Remove the allow-list.")
@click.option("--rpm", type=click.IntRange(0), default=None, help="Requests per minute (0 removes the limit).")
@click.option("--max-parallel", type=click.IntRange(0), default=None,
              help="Requests in flight at once (0 removes the limit).")
@_FORMAT
def update_cmd(db: str, key_id: str, name: str | None, tier: str | None, meta: tuple[str, ...],
               unset_meta: tuple[str, ...], expires: str | None, allow: tuple[str, ...], allow_any: bool,
               rpm: int | None, max_parallel: int | None, fmt: str) -> None:
    """Change KEY_ID's settings (a running server applies them within a second).

    \b
    Example:
      engine keys update --db keys.db key_3f9a1c2b7d4e --expires 30d --allow auto,cheap --rpm 600
      engine keys update --db keys.db key_3f9a1c2b7d4e --expires never --allow-any --rpm 0
    """
    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = name
    if tier is not None:
        changes["tier"] = tier
    if expires is not None:
        changes["expires_at"] = _expiry(expires)
    if allow and allow_any:
        raise click.UsageError("give --allow or --allow-any, not both")
    if allow or allow_any:
        changes["allow"] = _names(allow)
    if rpm is not None:
        changes["rpm"] = rpm or None
    if max_parallel is not None:
        changes["max_parallel"] = max_parallel or None
    store = _open(db, False)
    try:
        if meta or unset_meta:
            current = dict(store.get(key_id).metadata)
            current.update(parse_meta(meta))
            for k in unset_meta:
                current.pop(k, None)
            changes["metadata"] = current
        if not changes:
            raise click.UsageError("nothing to change: give at least one option (see --help)")
        info = store.update(key_id, **changes)
    except KeyError as e:
        click.echo(f"error: {e.args[0]}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(info.as_dict()))
    else:
        click.echo(f"updated {info.id} (tenant {info.tenant!r}): {', '.join(sorted(changes))}")
