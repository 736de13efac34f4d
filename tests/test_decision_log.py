"""DecisionLog: batching, flush/close semantics, concurrency, failures; query.summary math."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.store.decisions import DecisionLog, DecisionLogError
from engine.store.migrations import MIGRATIONS
from engine.store.query import open_readonly, percentile, request_rows, summary
from engine.store.records import AttemptRecord, EventRecord, FeedbackRecord, Outcome, RequestRecord

ROOT = Path(__file__).resolve().parents[1]


def req(rid: str, ts: float = 1_700_000_000.0, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {"outcome": "served", "model": "gpt-4o-mini", "provider": "openai", **kw}
    return RequestRecord(id=rid, ts=ts, **fields)


def att(rid: str, n: int = 1, **kw: Any) -> AttemptRecord:
    fields: dict[str, Any] = {"model": "gpt-4o-mini", "provider": "openai", "ts": 1_700_000_000.0, "outcome": "served",
                              **kw}  # fmt: skip
    return AttemptRecord(request_id=rid, n=n, **fields)


def count(path: Path, table: str = "requests") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"select count(*) from {table}").fetchone()[0])


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "decisions.db"


@pytest.fixture
def log(db_path: Path) -> Iterator[DecisionLog]:
    log = DecisionLog(db_path)
    yield log
    try:
        log.close()
    except DecisionLogError:
        pass  # tests that break the database on purpose have already asserted what they need


# -- round trip -------------------------------------------------------------------------------


def test_round_trip_of_every_table(log: DecisionLog, db_path: Path) -> None:
    request = RequestRecord(
        id="r1", ts=1_700_000_000.25, policy_digest="abc123", tenant="acme", api_key_id="key-1", route="premium-code",
        query_type="code", plan=("claude-sonnet", "gpt-4o"), model="gpt-4o", provider="openai", attempts=2,
        fallbacks=1, outcome="served", prompt_tokens=120, input_tokens=240, output_tokens=80, cost_usd=0.0123,
        latency_ms=812.5, cache_hit=False, saved_cost_usd=0.0, stream=True, max_tokens=500, temperature=0.2,
        prompt_hash="ab" * 32, prompt=None, meta={"tier": "premium", "tenant": "acme", "ünï": "cödé"},
        features={"signals": {"has_code": True}, "has_tools": False}, downgraded=True,
    )  # fmt: skip
    attempts = [
        att("r1", 1, model="claude-sonnet", provider="anthropic", outcome="error", error_class="RateLimited",
            error_message="429", retry_after=2.5, latency_ms=40.0),
        att("r1", 2, model="gpt-4o", input_tokens=120, output_tokens=80, cost_usd=0.0123, latency_ms=770.0),
    ]  # fmt: skip
    log.record(request, attempts)
    log.record_event(EventRecord(ts=1_700_000_001.0, kind="circuit_open", model="claude-sonnet", detail="50% errors"))
    log.record_feedback(FeedbackRecord(request_id="r1", ts=1_700_000_002.0, score=0.8, label="good"))
    log.flush()
    assert log.rows_written == 5

    db = open_readonly(db_path)
    row = next(iter(db.table("requests").rows))
    assert row == request.as_row() | {"cache_hit": 0, "stream": 1, "downgraded": 1}
    assert json.loads(row["plan"]) == ["claude-sonnet", "gpt-4o"]
    assert json.loads(row["meta"])["ünï"] == "cödé"
    stored_attempts = list(db.query("select * from attempts order by n"))
    assert [{k: v for k, v in a.items() if k != "id"} for a in stored_attempts] == [a.as_row() for a in attempts]
    assert [{k: v for k, v in e.items() if k != "id"} for e in db.table("events").rows] == [
        {"ts": 1_700_000_001.0, "kind": "circuit_open", "model": "claude-sonnet", "detail": "50% errors"}
    ]
    assert [f["score"] for f in db.table("feedback").rows] == [0.8]
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    db.close()

    (decoded,) = request_rows(db_path)
    assert decoded["plan"] == ["claude-sonnet", "gpt-4o"]
    assert decoded["features"] == {"signals": {"has_code": True}, "has_tools": False}
    assert decoded["stream"] is True and decoded["cache_hit"] is False


def test_meta_values_json_cannot_encode_are_stored_as_text(log: DecisionLog, db_path: Path) -> None:
    log.record(req("r1", meta={"path": Path("/tmp/x"), "when": object.__name__}))
    log.flush()
    assert request_rows(db_path)[0]["meta"] == {"path": "/tmp/x", "when": "object"}


# -- batching and flush -----------------------------------------------------------------------


def test_batches_are_cut_at_batch_size_and_at_flush(db_path: Path) -> None:
    # A delay no test waits for: batch boundaries then come only from the size and the flush.
    with DecisionLog(db_path, batch_size=1000, max_delay_s=600) as log:
        for i in range(2500):
            log.record(req(f"r{i}"), [att(f"r{i}")])
        log.flush()
        assert log.batches_written == 3
        assert log.rows_written == 5000
        assert count(db_path) == 2500 and count(db_path, "attempts") == 2500


def test_a_record_is_committed_without_flush_once_its_batch_times_out(db_path: Path) -> None:
    with DecisionLog(db_path, max_delay_s=0.01) as log:
        log.record(req("r1"))
        deadline = time.monotonic() + 30
        while log.rows_written == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert log.rows_written == 1
        assert count(db_path) == 1


def test_flush_makes_everything_recorded_before_it_visible(log: DecisionLog, db_path: Path) -> None:
    reader = sqlite3.connect(db_path)
    total = 0
    for round_ in range(5):
        for i in range(round_ * 300):
            log.record(req(f"{round_}-{i}"))
        total += round_ * 300
        log.flush()
        assert reader.execute("select count(*) from requests").fetchone()[0] == total
    reader.close()


def test_flush_with_nothing_queued_returns(log: DecisionLog) -> None:
    log.flush()
    log.flush(timeout=30)
    assert log.rows_written == 0


def test_close_flushes_everything_and_is_idempotent(db_path: Path) -> None:
    log = DecisionLog(db_path, max_delay_s=600)
    for i in range(3000):
        log.record(req(f"r{i}"), [att(f"r{i}"), att(f"r{i}", 2)])
    log.close()
    log.close()
    assert count(db_path) == 3000 and count(db_path, "attempts") == 6000
    with pytest.raises(RuntimeError, match="closed"):
        log.record(req("late"))
    log.flush()  # after close: nothing to wait for


async def test_async_context_manager_flushes_on_exit(db_path: Path) -> None:
    async with DecisionLog(db_path) as log:
        for i in range(100):
            log.record(req(f"r{i}"))
        await log.aflush()
        assert count(db_path) == 100
        log.record(req("last"))
    assert count(db_path) == 101


def test_records_are_checked_at_the_call(log: DecisionLog) -> None:
    with pytest.raises(TypeError):
        log.record({"id": "r1"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        log.record(req("r1"), [{"n": 1}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="request_id"):
        log.record(req("r1"), [att("other")])
    with pytest.raises(TypeError):
        log.record_event(req("r1"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        log.record_feedback(req("r1"))  # type: ignore[arg-type]


def test_bad_paths_and_settings_fail_at_open(tmp_path: Path) -> None:
    with pytest.raises(DecisionLogError, match="directory exists"):
        DecisionLog(tmp_path / "missing-dir" / "d.db")
    with pytest.raises(ValueError, match="memory"):
        DecisionLog(":memory:")
    with pytest.raises(ValueError):
        DecisionLog(tmp_path / "d.db", batch_size=0)
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("this is not a database, " * 100)
    with pytest.raises(DecisionLogError):
        DecisionLog(not_sqlite)


# -- concurrency ------------------------------------------------------------------------------


def test_ten_thousand_records_from_several_threads(log: DecisionLog, db_path: Path) -> None:
    def worker(t: int) -> None:
        for i in range(1250):
            log.record(req(f"t{t}-{i}"), [att(f"t{t}-{i}")])

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert count(db_path) == 10_000
    assert count(db_path, "attempts") == 10_000
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("select count(distinct id) from requests").fetchone()[0] == 10_000


async def test_ten_thousand_records_from_an_event_loop(db_path: Path) -> None:
    log = DecisionLog(db_path)

    async def producer(p: int) -> None:
        for i in range(1000):
            log.record(req(f"p{p}-{i}"))
            if i % 50 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(p) for p in range(10)))
    await log.aclose()
    assert count(db_path) == 10_000
    assert log.rows_written == 10_000


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from engine.store.decisions import DecisionLog
    from engine.store.records import AttemptRecord, RequestRecord
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    deadline = time.monotonic() + 60
    while not os.path.exists(path + ".go") and time.monotonic() < deadline:  # start together
        time.sleep(0.001)
    # Small batches: many transactions from each process, so their write locks interleave.
    with DecisionLog(path, batch_size=50, max_delay_s=0.001) as log:
        for i in range(n):
            rid = f"{tag}-{i}"
            log.record(RequestRecord(id=rid, ts=float(i), outcome="served"),
                       [AttemptRecord(request_id=rid, n=1, model="m", ts=float(i), outcome="ok")])
    """
)


def test_two_processes_writing_one_fresh_file(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(db_path), tag, "3000"], env=env, stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    Path(f"{db_path}.go").touch()  # both migrate the fresh file and write at the same time
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert count(db_path) == 6000
    assert count(db_path, "attempts") == 6000
    with sqlite3.connect(db_path) as conn:
        assert dict(conn.execute("select substr(id, 1, 1), count(*) from requests group by 1").fetchall()) == {
            "a": 3000, "b": 3000,
        }  # fmt: skip
        assert conn.execute("select count(*) from _migrations").fetchone()[0] == len(MIGRATIONS)


def test_records_left_unclosed_are_written_at_interpreter_exit(db_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from engine.store.decisions import DecisionLog
        from engine.store.records import RequestRecord
        log = DecisionLog(sys.argv[1], max_delay_s=600)
        for i in range(500):
            log.record(RequestRecord(id=str(i), ts=0.0, outcome="served"))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(db_path)], env=env, check=True, timeout=120)
    assert count(db_path) == 500


# -- failures ---------------------------------------------------------------------------------


def test_a_failing_write_surfaces_at_flush_and_its_records_are_retried(db_path: Path) -> None:
    log = DecisionLog(db_path)
    log.record(req("before"))
    log.flush()
    admin = sqlite3.connect(db_path, isolation_level=None)
    admin.execute("alter table requests rename to requests_away")  # every insert now fails
    log.record(req("r1"), [att("r1")])
    log.record(req("r2"))
    with pytest.raises(DecisionLogError, match=r"no such table: requests.*3 row\(s\) held") as info:
        log.flush()
    assert info.value.unwritten == 3
    assert log.errors == 1
    assert [getattr(r, "id", None) or getattr(r, "request_id", None) for r in log.unwritten()] == ["r1", "r1", "r2"]

    admin.execute("alter table requests_away rename to requests")
    log.record(req("r3"))
    log.flush()  # the held records go in with the new one, and nothing more is reported
    assert log.unwritten() == []
    log.close()
    admin.close()
    assert {r["id"] for r in request_rows(db_path)} == {"before", "r1", "r2", "r3"}
    assert count(db_path, "attempts") == 1


def test_a_locked_database_surfaces_at_flush_then_recovers(db_path: Path) -> None:
    log = DecisionLog(db_path, busy_timeout_s=0.05)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        log.record(req("r1"))
        with pytest.raises(DecisionLogError, match="locked"):
            log.flush()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    log.close()  # retried on close: nothing lost
    assert count(db_path) == 1
    assert log.errors == 1


def test_flush_timeout_leaves_the_records_queued(db_path: Path) -> None:
    log = DecisionLog(db_path, busy_timeout_s=60)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer waits on this lock, far longer than the flush
    try:
        log.record(req("r1"))
        with pytest.raises(TimeoutError):
            log.flush(timeout=0.05)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    log.flush()
    log.close()
    assert count(db_path) == 1
    assert log.errors == 0


def test_close_raises_when_records_could_not_be_written(db_path: Path) -> None:
    log = DecisionLog(db_path)
    admin = sqlite3.connect(db_path, isolation_level=None)
    admin.execute("drop table attempts")
    log.record(req("r1"), [att("r1")])
    with pytest.raises(DecisionLogError, match="unwritten"):
        log.close()
    admin.close()
    assert [type(r).__name__ for r in log.unwritten()] == ["RequestRecord", "AttemptRecord"]
    assert count(db_path) == 0  # the request row was rolled back with its attempts


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (req("dup"), "UNIQUE constraint failed"),
        (req("odd", route=["not", "a", "string"]), "request 'odd'"),
    ],
)
def test_a_record_sqlite_refuses_does_not_hold_back_the_others(
    log: DecisionLog, db_path: Path, bad: RequestRecord, message: str
) -> None:
    log.record(req("dup"))
    log.flush()
    for i in range(50):
        if i == 10:
            log.record(bad)  # inside the first full multi-row chunk
        log.record(req(f"ok{i}"), [att(f"ok{i}")])
    log.record(req("ok-after"))
    with pytest.raises(DecisionLogError, match=message):
        log.flush()
    assert count(db_path) == 52 and count(db_path, "attempts") == 50
    assert log.unwritten() == [bad]
    log.record(req("later"))
    log.flush()  # reported once; the refused record is not retried
    assert count(db_path) == 53
    assert log.errors == 1


# -- reading ----------------------------------------------------------------------------------


def _dataset(log: DecisionLog) -> None:
    """gpt: latencies 1..100 ms, 3 errors, 10 fallbacks, 5 cache hits; claude: 10 rows; 5 refused."""
    for i in range(1, 101):
        outcome: Outcome = "failed" if i <= 3 else "served"
        log.record(req(f"g{i}", ts=1000.0 + i, model="gpt", route="default", tenant="acme", latency_ms=float(i),
                       input_tokens=10, output_tokens=5, cost_usd=0.01, outcome=outcome,
                       fallbacks=1 if i % 10 == 0 else 0, cache_hit=i % 20 == 0,
                       saved_cost_usd=0.02 if i % 20 == 0 else 0.0, query_type="chat"))  # fmt: skip
    for i in range(1, 11):
        log.record(req(f"c{i}", ts=2000.0 + i, model="claude", route="premium", tenant="beta",
                       latency_ms=100.0 * i, input_tokens=100, output_tokens=50, cost_usd=0.1,
                       query_type="code"))  # fmt: skip
    for i in range(5):
        log.record(req(f"x{i}", ts=3000.0 + i, model=None, provider=None, route="premium", tenant="acme",
                       outcome="refused_policy", latency_ms=None, query_type="code"))  # fmt: skip
    for rid, score in (("g1", 1.0), ("g2", 0.0), ("g2", 0.5), ("c1", 4.0), ("nonexistent", 9.0)):
        log.record_feedback(FeedbackRecord(request_id=rid, ts=5000.0, score=score))
    log.record_feedback(FeedbackRecord(request_id="c2", ts=5000.0, label="no score"))
    log.flush()


def test_summary_by_model_on_a_known_dataset(log: DecisionLog, db_path: Path) -> None:
    _dataset(log)
    gpt, claude, refused = summary(db_path, by="model")
    assert gpt["model"] == "gpt" and claude["model"] == "claude" and refused["model"] is None
    assert gpt["requests"] == 100 and gpt["share"] == pytest.approx(100 / 115)
    assert (gpt["input_tokens"], gpt["output_tokens"], gpt["tokens"]) == (1000, 500, 1500)
    assert gpt["cost_usd"] == pytest.approx(1.0)
    assert (gpt["latency_p50_ms"], gpt["latency_p95_ms"], gpt["latency_p99_ms"]) == (50.0, 95.0, 99.0)
    assert gpt["errors"] == 3 and gpt["error_rate"] == pytest.approx(0.03)
    assert gpt["outcomes"] == {"failed": 3, "served": 97}
    assert gpt["fallbacks"] == 10 and gpt["fallback_rate"] == pytest.approx(0.1)
    assert gpt["cache_hits"] == 5 and gpt["cache_hit_rate"] == pytest.approx(0.05)
    assert gpt["saved_cost_usd"] == pytest.approx(0.1)
    assert gpt["feedback_count"] == 3 and gpt["feedback_mean"] == pytest.approx(0.5)

    assert (claude["latency_p50_ms"], claude["latency_p95_ms"], claude["latency_p99_ms"]) == (500.0, 1000.0, 1000.0)
    assert claude["cost_usd"] == pytest.approx(1.0)
    assert claude["feedback_count"] == 1 and claude["feedback_mean"] == 4.0
    assert refused["requests"] == 5 and refused["latency_p50_ms"] is None
    assert refused["outcomes"] == {"refused_policy": 5} and refused["error_rate"] == 0.0
    assert refused["feedback_mean"] is None


def test_summary_other_groupings_and_window(log: DecisionLog, db_path: Path) -> None:
    _dataset(log)
    by_route = {r["route"]: r["requests"] for r in summary(db_path, by="route")}
    assert by_route == {"default": 100, "premium": 15}
    by_tenant = summary(db_path, by="tenant")
    assert [(r["tenant"], r["requests"]) for r in by_tenant] == [("acme", 105), ("beta", 10)]
    assert sum(r["share"] for r in by_tenant) == pytest.approx(1.0)
    by_type = {r["query_type"]: r["requests"] for r in summary(db_path, by="query_type")}
    assert by_type == {"chat": 100, "code": 15}
    recent = summary(db_path, since_ts=2000.0, by="model")
    assert [(r["model"], r["requests"]) for r in recent] == [("claude", 10), (None, 5)]
    assert recent[0]["share"] == pytest.approx(10 / 15)
    assert len(request_rows(db_path, since_ts=3000.0)) == 5
    with pytest.raises(ValueError, match="groups by"):
        summary(db_path, by="prompt")  # type: ignore[arg-type]


def test_readers_need_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no decision log"):
        summary(tmp_path / "nope.db")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    values = [float(v) for v in range(1, 11)]
    assert [percentile(values, p) for p in (0, 10, 50, 90, 95, 100)] == [1.0, 1.0, 5.0, 9.0, 10.0, 10.0]


@pytest.mark.parametrize("meta", [
    {"tenant": "acme", "n": 1}, {"tenant": "acme", "n": True}, {"tenant": "acme", "n": 1.0}, {"x": -0.0}, {"x": 0.0},
    {"x": float("nan")}, {"x": None}, {"nested": {"a": 1, "b": True}}, {"nested": {"a": 1.0, "b": 1}},
    {"deep": {"a": {"b": 1}}}, {"list": [1, 2]}, {"when": Path("/tmp/x")}, {"ü": "snow ☃"},
])
def test_a_remembered_encoding_is_the_encoding(meta: dict[str, Any]) -> None:
    # the writer remembers the JSON of repeated meta/features dicts; values that compare equal
    # but encode differently (1, True, 1.0; -0.0, 0.0) never share an entry
    from engine.store.records import _encode_json, _encode_mapping

    for _ in range(2):  # the second time from the memo, where it applies
        for m in (meta, {"tenant": "acme", "n": 1}, {"x": 0.0}):
            assert _encode_mapping(m) == _encode_json(m)
