"""Decision-log schema: migrations, the record classes and docs/logging.md must agree."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from engine.store import migrations
from engine.store.migrations import MIGRATIONS_TABLE, applied_migrations, migrate, schema_sql
from engine.store.records import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    FEEDBACK_COLUMNS,
    REQUEST_COLUMNS,
    AttemptRecord,
    EventRecord,
    FeedbackRecord,
    RequestRecord,
)

ALL = ["m001_initial", "m002_request_surface", "m003_outcome_vocabulary"]
DOC = Path(__file__).resolve().parents[1] / "docs" / "logging.md"

# The documented schema, written out by hand: a migration that changes a column breaks this test
# on purpose, so that the change is deliberate and docs/logging.md follows.
EXPECTED: dict[str, dict[str, type]] = {
    "requests": {
        "id": str, "ts": float, "policy_digest": str, "tenant": str, "api_key_id": str, "route": str,
        "query_type": str, "plan": str, "model": str, "provider": str, "attempts": int, "fallbacks": int,
        "outcome": str, "error_class": str, "error_message": str, "prompt_tokens": int, "input_tokens": int,
        "output_tokens": int, "cost_usd": float, "latency_ms": float, "cache_hit": int, "saved_cost_usd": float,
        "stream": int, "max_tokens": int, "temperature": float, "prompt_hash": str, "prompt": str, "meta": str,
        "features": str, "downgraded": int, "needs": str, "tools_offered": int, "images": int,
        "output_format": str, "seed": int, "finish_reason": str, "tool_calls": int,
    },
    "attempts": {
        "id": int, "request_id": str, "n": int, "model": str, "provider": str, "ts": float, "latency_ms": float,
        "outcome": str, "error_class": str, "error_message": str, "input_tokens": int, "output_tokens": int,
        "cost_usd": float, "retry_after": float,
    },
    "feedback": {"id": int, "request_id": str, "ts": float, "score": float, "label": str},
    "events": {"id": int, "ts": float, "kind": str, "model": str, "detail": str},
    MIGRATIONS_TABLE: {"name": str, "applied_at": str},
}  # fmt: skip

EXPECTED_INDEXES = {
    "requests": {("ts",), ("tenant", "ts"), ("model", "ts"), ("finish_reason", "ts")},
    "attempts": {("request_id",)},
    "feedback": {("request_id",)},
    "events": {("ts",)},
}


def _memory_db() -> sqlite_utils.Database:
    return sqlite_utils.Database(memory=True, execute_plugins=False)


def test_migrate_blank_memory_db_creates_documented_schema() -> None:
    db = _memory_db()
    assert migrate(db) == ALL
    assert set(db.table_names()) == set(EXPECTED)
    for table, columns in EXPECTED.items():
        assert db.table(table).columns_dict == columns, table
    for table, indexes in EXPECTED_INDEXES.items():
        assert {tuple(ix.columns) for ix in db.table(table).indexes if ix.origin == "c"} == indexes, table
    assert db.table("requests").pks == ["id"]
    assert applied_migrations(db) == [fn.__name__ for fn in migrations.MIGRATIONS]


def test_migrate_is_idempotent_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    db = sqlite_utils.Database(path, execute_plugins=False)
    assert migrate(db) == ALL
    schema = db.schema
    db.table("requests").insert({"id": "r1", "ts": 1.0, "outcome": "ok"})
    db.close()

    again = sqlite_utils.Database(path, execute_plugins=False)
    assert migrate(again) == []
    assert migrate(again) == []
    assert again.schema == schema
    assert again.table("requests").count == 1  # data survives re-running migrations
    assert [r["name"] for r in again.table(MIGRATIONS_TABLE).rows] == ALL


def test_a_failing_migration_rolls_back_and_is_not_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    def m999_broken(db: sqlite_utils.Database) -> None:
        db.table("half_done").create({"x": int})
        raise RuntimeError("boom")

    db = _memory_db()
    migrate(db)
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, m999_broken])
    with pytest.raises(RuntimeError, match="boom"):
        migrate(db)
    assert not db.table("half_done").exists()
    assert applied_migrations(db) == ALL
    assert not db.conn.in_transaction


def test_migrate_refuses_an_open_transaction() -> None:
    db = _memory_db()
    db.execute("BEGIN")
    with pytest.raises(RuntimeError, match="outside any transaction"):
        migrate(db)


def test_concurrent_migrations_of_a_fresh_file_apply_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    barrier = threading.Barrier(4)
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def opener() -> None:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            barrier.wait()
            applied.append(migrate(sqlite_utils.Database(conn, execute_plugins=False)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied) == [[], [], [], ALL]


def test_record_classes_match_the_tables() -> None:
    db = _memory_db()
    migrate(db)
    for cls, columns, table in (
        (RequestRecord, REQUEST_COLUMNS, "requests"),
        (AttemptRecord, ATTEMPT_COLUMNS, "attempts"),
        (EventRecord, EVENT_COLUMNS, "events"),
        (FeedbackRecord, FEEDBACK_COLUMNS, "feedback"),
    ):
        table_columns = [c for c in db.table(table).columns_dict if not (c == "id" and table != "requests")]
        assert list(columns) == table_columns, table
        assert [f.name for f in dataclasses.fields(cls)] == table_columns, cls.__name__


def _documented_columns(text: str) -> dict[str, set[str]]:
    """Columns listed in the per-table sections of docs/logging.md (`### \\`table\\`` + a table)."""
    out: dict[str, set[str]] = {}
    table: str | None = None
    for line in text.splitlines():
        heading = re.match(r"^### `(\w+)`\s*$", line)
        if heading:
            table = heading.group(1)
            out[table] = set()
        elif line.startswith("## ") or line.startswith("### "):
            table = None
        elif table is not None:
            row = re.match(r"^\| `(\w+)` \|", line)
            if row:
                out[table].add(row.group(1))
    return out


def test_docs_list_every_column_and_nothing_else() -> None:
    db = _memory_db()
    migrate(db)
    documented = _documented_columns(DOC.read_text(encoding="utf-8"))
    actual = {t: set(db.table(t).columns_dict) for t in db.table_names()}
    assert documented == actual


def test_docs_show_the_generated_schema() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(CREATE TABLE.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/logging.md needs exactly one ```sql block with the generated schema"
    assert blocks[0].strip() == schema_sql().strip(), "regenerate it with: python -m engine.store.migrations"


def test_doc_queries_run_against_a_migrated_log() -> None:
    db = _memory_db()
    migrate(db)
    queries = [q for q in re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
               if not q.startswith("CREATE")]  # fmt: skip
    assert len(queries) >= 5
    for query in queries:
        for statement in filter(str.strip, query.split(";")):
            db.execute(statement)  # raises on a typo in a column or table name


def test_m003_rewrites_legacy_outcomes_and_readers_agree_before_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.store.outcomes import OUTCOME_SQL

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path, execute_plugins=False)
    with monkeypatch.context() as m:  # a log written before the vocabulary
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
        assert migrate(db) == ["m001_initial"]
    rows = [
        ("served", "ok", 0, None), ("cached", "ok", 1, None), ("failed", "error", 0, None),
        ("limited", "error", 0, None), ("quota", "quota_exceeded", 0, "quota 'daily' exceeded"),
        ("policy", "refused", 0, "route 'r' leaves no model for this request (a: too expensive)"),
        ("circuits", "refused", 0, "route 'r' leaves no model for this request (a: circuit open, b: circuit open)"),
        ("limits", "refused", 0, "route 'r' leaves no model (a: unavailable: rate limit (rpm))"),
        ("bad", "bad_request", 0, "empty prompt"),
    ]
    for rid, outcome, hit, message in rows:
        db.table("requests").insert({"id": rid, "ts": 1.0, "outcome": outcome, "cache_hit": hit,
                                     "error_message": message})
    for rid, n, outcome, cls in (("failed", 1, "error", "ServerError"), ("failed", 2, "error", "RateLimited"),
                                 ("limited", 1, "error", "RateLimited"),
                                 ("limited", 2, "skipped", "RateLimitedLocally")):
        db.table("attempts").insert({"request_id": rid, "n": n, "outcome": outcome, "error_class": cls})
    read_before = dict(db.execute(f"select id, {OUTCOME_SQL} from requests").fetchall())
    assert migrate(db) == ["m002_request_surface", "m003_outcome_vocabulary"]
    after = dict(db.execute("select id, outcome from requests").fetchall())
    assert after == {"served": "served", "cached": "cached", "failed": "failed", "limited": "rate_limited",
                     "quota": "refused_quota", "policy": "refused_policy", "circuits": "no_model",
                     "limits": "rate_limited", "bad": "bad_request"}
    # a read-only reader of the unmigrated file sees the same, except what needs the attempts
    assert read_before == {**after, "limited": "failed"}
    assert dict(db.execute(f"select id, {OUTCOME_SQL} from requests").fetchall()) == after
