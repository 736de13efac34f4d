"""`engine keys create|list|revoke`: client keys of `engine serve`."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import click

from engine.cli.common import EXIT_INVALID, parse_meta

if TYPE_CHECKING:
    from engine.server.keystore import KeyStore

_DB = click.option("--db", "db", required=True, type=click.Path(dir_okay=False), envvar="ENGINE_KEYS_DB",
                   help="SQLite file of the keys (the one `engine serve --db` reads). [env: ENGINE_KEYS_DB]")
_CREATE = click.option("--create", is_flag=True, help="Create the key store if FILE does not exist (else refused).")
_FORMAT = click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty", show_default=True)


@click.group("keys", context_settings={"help_option_names": ["-h", "--help"]})
def keys_group() -> None:
    """Create, list and revoke the API keys clients send to `engine serve`.

    \b
    Example:
      engine keys create --db keys.db --tenant acme --tier premium --name "acme backend"
      engine keys list --db keys.db
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
@_FORMAT
def create_cmd(db: str, tenant: str, name: str | None, tier: str | None, meta: tuple[str, ...], quota_window: str,
               quota_requests: int | None, quota_tokens: int | None, quota_cost: float | None, fmt: str) -> None:
    """Create a key and print it (once)."""
    from engine.server.keystore import KeyQuota, KeyStore

    quota = None
    if quota_requests is not None or quota_tokens is not None or quota_cost is not None:
        quota = KeyQuota(window=quota_window, requests=quota_requests, tokens=quota_tokens,  # type: ignore[arg-type]
                         cost_usd=quota_cost)
    store = KeyStore(db)
    try:
        info, secret = store.create(tenant, name=name, tier=tier, metadata=parse_meta(meta), quota=quota)
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
    rows = [("ID", "PREFIX", "TENANT", "TIER", "NAME", "QUOTA", "CREATED", "REVOKED")]
    for k in keys:
        quota = "" if k.quota is None else " ".join(f"{n}={v}" for n, v in k.quota.as_dict().items())
        rows.append((k.id, k.prefix + "...", k.tenant, k.tier or "", k.name or "", quota, _when(k.created_at),
                     _when(k.revoked_at) if k.revoked_at else ""))
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
