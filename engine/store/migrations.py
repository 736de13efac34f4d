"""Numbered schema migrations of the decision log.

Each migration is a function `mNNN_what(db)` registered with `@migration`; `migrate(db)` runs
the ones a database has not seen yet, in order, and records each in `_migrations`. Running it
again does nothing, so every process that opens the log may call it.

Rules for adding one: never edit a migration that has shipped (files in the field already
ran it); append `m002_...` instead; spell its columns out here rather than importing them from
`records.py`, so that history does not move when the records do. Then update
`docs/logging.md` (`python -m engine.store.migrations` prints the generated schema) and
`records.py`; `tests/test_migrations.py` fails until all three agree.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import sqlite_utils

__all__ = ["MIGRATIONS", "MIGRATIONS_TABLE", "applied_migrations", "migrate", "migration", "schema_sql"]

Migration = Callable[[sqlite_utils.Database], None]

MIGRATIONS: list[Migration] = []
"""Every migration, in the order it must run."""

MIGRATIONS_TABLE = "_migrations"
"""Where `migrate` records the name and UTC time of each migration it applied."""


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration (its name is its identity: keep it stable)."""
    MIGRATIONS.append(fn)
    return fn


def applied_migrations(db: sqlite_utils.Database) -> list[str]:
    """Names of the migrations already applied to `db`, in the order they ran."""
    if not db[MIGRATIONS_TABLE].exists():
        return []
    return [row["name"] for row in db.query(f"select name from {MIGRATIONS_TABLE} order by rowid")]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Bring `db` up to date; return the names of the migrations applied now.

    Idempotent. Safe when several processes open a fresh file at once: the check and the
    migrations run inside one `BEGIN IMMEDIATE` transaction, so the second process waits for
    the first (up to the connection's busy timeout) and then finds nothing left to do.
    A migration that fails rolls back with every other migration of the same call.

    Args:
        db: the database; it must not be inside a transaction.

    Raises:
        RuntimeError: `db` has an open transaction (its work would be committed by ours).
    """
    if db.conn.in_transaction:
        raise RuntimeError("migrate() needs a connection outside any transaction; commit or roll back first")
    wanted = [fn.__name__ for fn in MIGRATIONS]
    # Cheap read first: the usual case (an up-to-date file) then takes no write lock at all.
    if set(wanted) <= set(applied_migrations(db)):
        return []
    applied_now: list[str] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        if not db[MIGRATIONS_TABLE].exists():
            db.table(MIGRATIONS_TABLE).create({"name": str, "applied_at": str}, pk="name")
        done = set(applied_migrations(db))
        for fn in MIGRATIONS:
            if fn.__name__ in done:
                continue
            fn(db)
            db.execute(
                f"insert into {MIGRATIONS_TABLE} (name, applied_at) values (?, ?)",
                (fn.__name__, datetime.datetime.now(datetime.timezone.utc).isoformat()),
            )
            applied_now.append(fn.__name__)
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise
    return applied_now


def schema_sql() -> str:
    """The SQL schema that `migrate` produces on an empty database (what `docs/logging.md` shows)."""
    db = sqlite_utils.Database(memory=True, execute_plugins=False)
    try:
        migrate(db)
        return db.schema
    finally:
        db.close()


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    """Requests, attempts, feedback and events, with the indexes the stats queries use."""
    db.table("requests").create(
        {
            "id": str,
            "ts": float,
            "policy_digest": str,
            "tenant": str,
            "api_key_id": str,
            "route": str,
            "query_type": str,
            "plan": str,
            "model": str,
            "provider": str,
            "attempts": int,
            "fallbacks": int,
            "outcome": str,
            "error_class": str,
            "error_message": str,
            "prompt_tokens": int,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "latency_ms": float,
            "cache_hit": int,
            "saved_cost_usd": float,
            "stream": int,
            "max_tokens": int,
            "temperature": float,
            "prompt_hash": str,
            "prompt": str,
            "meta": str,
            "features": str,
            "downgraded": int,
        },
        pk="id",
    )
    db.table("attempts").create(
        {
            "id": int,
            "request_id": str,
            "n": int,
            "model": str,
            "provider": str,
            "ts": float,
            "latency_ms": float,
            "outcome": str,
            "error_class": str,
            "error_message": str,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "retry_after": float,
        },
        pk="id",
    )
    db.table("feedback").create({"id": int, "request_id": str, "ts": float, "score": float, "label": str}, pk="id")
    db.table("events").create({"id": int, "ts": float, "kind": str, "model": str, "detail": str}, pk="id")
    db.table("requests").create_index(["ts"], index_name="idx_requests_ts")
    db.table("requests").create_index(["tenant", "ts"], index_name="idx_requests_tenant_ts")
    db.table("requests").create_index(["model", "ts"], index_name="idx_requests_model_ts")
    db.table("attempts").create_index(["request_id"], index_name="idx_attempts_request_id")
    # Feedback is joined to its request by `summary`; without this the join scans the table.
    db.table("feedback").create_index(["request_id"], index_name="idx_feedback_request_id")
    db.table("events").create_index(["ts"], index_name="idx_events_ts")


@migration
def m002_request_surface(db: sqlite_utils.Database) -> None:
    """What each request used of the request surface (tools, images, output format, seed) and how
    its answer ended (finish reason, tool calls)."""
    for name, kind in (
        ("needs", "TEXT"),
        ("tools_offered", "INTEGER"),
        ("images", "INTEGER"),
        ("output_format", "TEXT"),
        ("seed", "INTEGER"),
        ("finish_reason", "TEXT"),
        ("tool_calls", "INTEGER"),
    ):
        db.execute(f'ALTER TABLE requests ADD COLUMN "{name}" {kind}')
    # "which requests used tools, and how did they end": the dashboard's and stats' question
    db.table("requests").create_index(["finish_reason", "ts"], index_name="idx_requests_finish_ts")


@migration
def m003_outcome_vocabulary(db: sqlite_utils.Database) -> None:
    """`requests.outcome` in the shared vocabulary (`engine.store.outcomes`): ok -> served or
    cached, error -> failed or rate_limited, refused -> refused_policy, no_model or rate_limited,
    quota_exceeded -> refused_quota. Values are spelled out, not imported: history must not move."""
    limited = "('RateLimited', 'RateLimitedLocally')"
    tried = "a.request_id = requests.id and (a.outcome != 'skipped' or a.error_class in " + limited + ")"
    db.execute(
        "update requests set outcome = case outcome "
        "when 'ok' then (case when cache_hit then 'cached' else 'served' end) "
        "when 'quota_exceeded' then 'refused_quota' "
        "when 'refused' then (case when error_message like '%circuit open%' then 'no_model' "
        "  when error_message like '%unavailable: rate limit%' then 'rate_limited' else 'refused_policy' end) "
        f"when 'error' then (case when exists (select 1 from attempts a where {tried}) "
        f"  and not exists (select 1 from attempts a where {tried} and coalesce(a.error_class, '') not in {limited}) "
        "  then 'rate_limited' else 'failed' end) "
        "else outcome end "
        "where outcome in ('ok', 'error', 'refused', 'quota_exceeded')")


if __name__ == "__main__":
    print(schema_sql())
