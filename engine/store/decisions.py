"""The decision log: one SQLite row per request and per attempt, written off the hot path.

`DecisionLog.record()` only puts the record on a `queue.SimpleQueue` (well under a
microsecond, safe from any thread and from an event loop). One writer thread owns its own
connection, gathers what is queued into batches and commits each batch in one transaction.

Durability contract, in order of what callers rely on:

- `flush()` returns once everything recorded before it is committed, or raises.
- Nothing is dropped silently. A batch that fails is retried once on a fresh connection; if it
  fails again its records stay in memory, are retried with every later batch, and the next
  `flush()`/`close()` raises `DecisionLogError`. A record SQLite refuses outright (a duplicate
  request id, a value it cannot store) is isolated so that it does not hold back the others,
  kept in memory (`unwritten()`) and reported the same way.
- Several processes may write one file: WAL, `BEGIN IMMEDIATE` per batch and a busy timeout.
- `synchronous=NORMAL`: in WAL mode a crash cannot corrupt the file, but a power cut may lose
  the last batches. That is the usual trade for a log; pass `synchronous="FULL"` to pay for more.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import queue
import sqlite3
import threading
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import Literal

import sqlite_utils

from engine.errors import EngineError
from engine.store.migrations import migrate
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
from engine.store.sqlite import enable_wal

__all__ = ["DecisionLog", "DecisionLogError"]


class DecisionLogError(EngineError):
    """Records could not be written to the decision log.

    Attributes:
        unwritten: rows held in memory when the error was raised (see `DecisionLog.unwritten`).
    """

    def __init__(self, message: str, *, unwritten: int = 0) -> None:
        super().__init__(message)
        self.unwritten = unwritten


# Rows reach SQLite a chunk at a time, through one multi-row INSERT: the sqlite3 module binds the
# chunk's values with the GIL held, then runs a single sqlite3_step without it for a few hundred
# microseconds, long enough for a thread waiting on the GIL (an event loop) to wake up and take
# it. With executemany each row's step lasts microseconds, less than a thread takes to wake, so
# the writer kept winning the GIL back and the loop waited a whole switch interval (5 ms).
# A chunk stays under 999 bound values, the limit of SQLite builds older than 3.32. Newer builds
# take 64-row `requests` chunks (instead of 27): tried, the serving loop gained 2-3% requests a
# second but its worst on-CPU stall grew by ~0.4 ms (binding a chunk holds the GIL), so not taken.
_MAX_VARIABLES = 999
_MAX_CHUNK = 64


class _Table:
    """Insert statements of one table: a single row, and a full chunk of `chunk_rows` rows."""

    __slots__ = ("chunk", "chunk_rows", "one")

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        row = f"({', '.join('?' * len(columns))})"
        head = f"insert into {name} ({', '.join(columns)}) values "
        self.one = head + row
        self.chunk_rows = min(_MAX_CHUNK, _MAX_VARIABLES // len(columns))
        self.chunk = head + ", ".join([row] * self.chunk_rows)


# Between chunks the writer offers its CPU to any thread waiting for one. The kernel does not
# preempt a busy thread at once for one that wakes up (an event loop whose timer fired), so without
# this a loop sharing the writer's CPU waited up to a few ms behind a long batch: measured p99 loop
# lateness 2.8-3.5 ms without, 1.0-1.4 ms with, on a loaded 2-CPU machine. A chunk is ~0.5 ms of
# work and sched_yield costs ~1 µs when nothing else wants the CPU.
_yield_cpu = getattr(os, "sched_yield", None)

_REQUESTS = _Table("requests", REQUEST_COLUMNS)
_ATTEMPTS = _Table("attempts", ATTEMPT_COLUMNS)
_EVENTS = _Table("events", EVENT_COLUMNS)
_FEEDBACK = _Table("feedback", FEEDBACK_COLUMNS)


def _insert_chunks(
    conn: sqlite3.Connection, table: _Table, rows: list[tuple[object, ...]], *, final: bool = False
) -> int:
    """Insert every full chunk at the head of `rows` (and, if `final`, the rest); remove what was inserted."""
    done, size = 0, table.chunk_rows
    while len(rows) - done >= size:
        conn.execute(table.chunk, tuple(chain.from_iterable(rows[done : done + size])))
        done += size
        if _yield_cpu is not None:
            _yield_cpu()
    if final and len(rows) > done:
        conn.executemany(table.one, rows[done:])
        done = len(rows)
    del rows[:done]
    return done


# Errors that belong to one record rather than to the database: retrying the batch cannot help,
# so the batch is split to find the culprits. (Python < 3.12 raises InterfaceError for an
# unbindable value, later versions ProgrammingError; OverflowError is an int SQLite cannot hold;
# ValueError/TypeError come from encoding a record's JSON columns.)
_RECORD_ERRORS = (
    sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError,
    OverflowError, ValueError, TypeError,
)  # fmt: skip

_Request = tuple[RequestRecord, tuple[AttemptRecord, ...]]
_Item = _Request | EventRecord | FeedbackRecord


class _Flush:
    """A queue marker: the writer sets `done` once everything queued before it is committed."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class DecisionLog:
    """Batched, thread-safe, non-blocking writer of the decision log.

    Example:
        ```python
        with DecisionLog("decisions.db") as log:
            log.record(RequestRecord(id="r1", ts=time.time(), outcome="ok", model="gpt-4o-mini"))
        ```
    """

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 1000,
        max_delay_s: float = 0.25,
        busy_timeout_s: float = 5.0,
        synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        """Open (creating and migrating if needed) the log at `path` and start its writer thread.

        Args:
            path: SQLite file; created if missing, its directory must exist.
            batch_size: most records committed in one transaction.
            max_delay_s: longest a record waits for its batch to fill before being committed. A
                quarter second: at sparse traffic (a request every 50 ms) a commit per request cost
                ~0.24 ms of CPU per request, at 0.25 s ~0.13 (60 records 50 ms apart); a
                crash can lose what is queued, as before, now up to 0.25 s of it.
            busy_timeout_s: how long a batch waits for another process's write lock.
            synchronous: SQLite `synchronous` pragma (see the module docstring).

        Raises:
            DecisionLogError: the file cannot be opened or migrated (e.g. a missing directory).
            ValueError: a bad setting, or `":memory:"` (the writer's connection would see its own
                private database, so nothing could ever be read back).
        """
        if str(path) == ":memory:":
            raise ValueError("DecisionLog needs a file path; ':memory:' would be private to the writer thread")
        if batch_size < 1 or max_delay_s < 0 or busy_timeout_s < 0:
            raise ValueError("batch_size must be >= 1, max_delay_s and busy_timeout_s >= 0")
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ValueError(f"synchronous must be OFF, NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        """The SQLite file."""
        self.rows_written = 0
        """Rows committed so far, over all four tables."""
        self.batches_written = 0
        """Transactions committed so far."""
        self.errors = 0
        """Write failures so far: batches that failed twice, plus records SQLite refused."""
        self._batch_size = batch_size
        self._max_delay_s = max_delay_s
        self._busy_timeout_s = busy_timeout_s
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        # Cuts the writer's gathering pause short: set by flush, close and a full batch only, so
        # that recording a request never wakes the writer thread (a thread handoff per record
        # cost ~0.3 ms of event-loop time per request in benchmarks/compare.py).
        self._wake = threading.Event()
        self._markers_put = 0  # flush markers and _STOP queued (under _lock)
        self._markers_taken = 0  # ... and taken by the writer (writer thread only)
        # Makes "is it closed?" and the put one step, so no record can land behind _STOP.
        self._lock = threading.Lock()
        self._closed = False
        # Guards the three lists below, which the writer changes and callers read.
        self._state_lock = threading.Lock()
        self._failures: list[tuple[str, BaseException]] = []  # not yet raised by flush/close
        self._held: list[_Item] = []  # failed with the database; retried with the next batch
        self._refused: list[_Item] = []  # refused by SQLite itself; never retried
        try:
            self._conn = self._connect()
            try:
                migrate(sqlite_utils.Database(self._conn, execute_plugins=False))
            except BaseException:
                self._conn.close()
                raise
        except sqlite3.Error as exc:
            raise DecisionLogError(
                f"cannot open the decision log at {self.path}: {exc}; check that its directory exists and is "
                "writable and that the file is an SQLite database"
            ) from exc
        self._thread = threading.Thread(target=self._run, name=f"decision-log:{self.path.name}", daemon=True)
        self._thread.start()
        # The writer is a daemon thread so that a forgotten close() cannot hang interpreter exit;
        # atexit handlers run before daemon threads are stopped, so queued records still land.
        atexit.register(self.close)

    # -- producer side (any thread, any event loop) ------------------------------------------

    def record(self, request: RequestRecord, attempts: Sequence[AttemptRecord] = ()) -> None:
        """Queue one request and its attempts; returns at once.

        Raises:
            TypeError: not a `RequestRecord` / `AttemptRecord`.
            ValueError: an attempt's `request_id` is not the request's `id`.
            RuntimeError: the log is closed.
        """
        if not isinstance(request, RequestRecord):
            raise TypeError(f"record() takes a RequestRecord, not {type(request).__name__}")
        atts = tuple(attempts)
        for attempt in atts:
            if not isinstance(attempt, AttemptRecord):
                raise TypeError(f"attempts must be AttemptRecord, not {type(attempt).__name__}")
            if attempt.request_id != request.id:
                raise ValueError(f"attempt {attempt.n} has request_id {attempt.request_id!r}, not {request.id!r}")
        self._put((request, atts))

    def record_event(self, event: EventRecord) -> None:
        """Queue one event (circuit opened, policy reloaded...); returns at once."""
        if not isinstance(event, EventRecord):
            raise TypeError(f"record_event() takes an EventRecord, not {type(event).__name__}")
        self._put(event)

    def record_feedback(self, feedback: FeedbackRecord) -> None:
        """Queue one feedback row; returns at once."""
        if not isinstance(feedback, FeedbackRecord):
            raise TypeError(f"record_feedback() takes a FeedbackRecord, not {type(feedback).__name__}")
        self._put(feedback)

    def _put(self, item: object) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the decision log {self.path} is closed; records can no longer be added")
            self._queue.put(item)
        if self._queue.qsize() >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything recorded before this call is committed.

        Raises:
            DecisionLogError: a write failed since the last flush (the message says how many
                records are held in memory; they are retried by the next flush).
            TimeoutError: `timeout` seconds passed first (nothing is lost; the writer carries on).
        """
        marker = _Flush()
        with self._lock:
            if self._closed:
                return
            self._queue.put(marker)
            self._markers_put += 1
        self._wake.set()
        if not marker.done.wait(timeout):
            raise TimeoutError(f"decision log flush did not finish within {timeout} s; the writer is still working")
        self._raise_failures()

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the writer thread. Idempotent.

        Raises:
            DecisionLogError: records could not be written; they are still available from
                `unwritten()` (and will not be retried any more).
            TimeoutError: the writer did not finish within `timeout` seconds.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
            self._markers_put += 1
        self._wake.set()
        atexit.unregister(self.close)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"decision log writer did not stop within {timeout} s")
        self._raise_failures(closing=True)

    async def aflush(self, timeout: float | None = None) -> None:
        """`flush()` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """`close()` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.close, timeout)

    def unwritten(self) -> list[RequestRecord | AttemptRecord | EventRecord | FeedbackRecord]:
        """Records the writer holds because they could not be written: refused ones, then held ones."""
        with self._state_lock:
            items = self._refused + self._held
        out: list[RequestRecord | AttemptRecord | EventRecord | FeedbackRecord] = []
        for item in items:
            if isinstance(item, tuple):
                out.append(item[0])
                out.extend(item[1])
            else:
                out.append(item)
        return out

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> DecisionLog:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _raise_failures(self, *, closing: bool = False) -> None:
        with self._state_lock:
            failures, self._failures = self._failures, []
            held, refused = _count_rows(self._held), _count_rows(self._refused)
        if not failures:
            return
        fate = (
            "they were not written and are available from unwritten()"
            if closing
            else "held records are retried by the next flush; refused ones are available from unwritten()"
        )
        first_message, first_exc = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise DecisionLogError(
            f"decision log {self.path}: {first_message}{more}; {held} row(s) held after database errors, "
            f"{refused} refused by SQLite; {fate}",
            unwritten=held + refused,
        ) from first_exc

    # -- writer thread -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the writer issues BEGIN IMMEDIATE / COMMIT itself, so the driver
        # never opens a transaction behind its back. `timeout` is SQLite's busy timeout.
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            enable_wal(conn, self._busy_timeout_s)
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, flushes, stop = self._collect()
            try:
                if batch or self._held:
                    self._write(batch)
            finally:
                for marker in flushes:
                    marker.done.set()
        self._conn.close()

    def _collect(self) -> tuple[list[_Item], list[_Flush], bool]:
        """Block for the first item, pause up to `max_delay_s` (cut short by flush, close or a full
        batch), then take what is queued, stopping at a marker or a full batch."""
        q = self._queue
        batch: list[_Item] = []
        item = q.get()
        # Gather without a wake-up per record: producers only signal a full batch, a flush or
        # close. Clearing before the checks means no signal is lost between them and the wait.
        self._wake.clear()
        if item is not _STOP and not isinstance(item, _Flush) and self._markers_taken == self._markers_put \
                and q.qsize() + 1 < self._batch_size:
            self._wake.wait(self._max_delay_s)
        while True:
            if item is _STOP:
                self._markers_taken += 1
                return batch, [], True
            if isinstance(item, _Flush):
                self._markers_taken += 1
                return batch, [item], False
            batch.append(item)  # type: ignore[arg-type]  # only records and markers are ever queued
            if len(batch) >= self._batch_size:
                return batch, [], False
            try:
                item = q.get_nowait()
            except queue.Empty:
                return batch, [], False

    def _write(self, batch: list[_Item]) -> None:
        with self._state_lock:
            items, self._held = self._held + batch, []
        try:
            failure = self._write_with_retry(items)
        except Exception as exc:  # a bug here must not strand these records or kill the writer
            failure = exc
        if failure is not None:
            with self._state_lock:
                self._held = items + self._held
                message = f"could not write {_count_rows(items)} row(s) after a retry: {failure}"
                self._failures.append((message, failure))
                self.errors += 1

    def _write_with_retry(self, items: list[_Item]) -> BaseException | None:
        """Write `items`; on a database error reopen the connection and try once more."""
        failure: BaseException | None = None
        for try_no in (1, 2):
            try:
                try:
                    self._insert_batch(items)
                except _RECORD_ERRORS:
                    # One bad record must not hold back the others: find it row by row.
                    self._insert_one_by_one(items)
                return None
            except sqlite3.Error as exc:
                failure = exc
            if try_no == 1:
                try:
                    self._conn.close()
                    self._conn = self._connect()
                except sqlite3.Error as exc:
                    return exc
        return failure

    def _insert_batch(self, items: list[_Item]) -> None:
        conn = self._conn
        requests: list[tuple[object, ...]] = []
        attempts: list[tuple[object, ...]] = []
        events: list[tuple[object, ...]] = []
        feedback: list[tuple[object, ...]] = []
        n = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                if isinstance(item, tuple):
                    request, atts = item
                    requests.append(request.values())
                    for attempt in atts:
                        attempts.append(attempt.values())
                    if len(requests) == _REQUESTS.chunk_rows:
                        n += _insert_chunks(conn, _REQUESTS, requests)
                    if len(attempts) >= _ATTEMPTS.chunk_rows:
                        n += _insert_chunks(conn, _ATTEMPTS, attempts)
                elif isinstance(item, EventRecord):
                    events.append(item.values())
                else:
                    feedback.append(item.values())
            for table, rows in ((_REQUESTS, requests), (_ATTEMPTS, attempts), (_EVENTS, events), (_FEEDBACK, feedback)):
                n += _insert_chunks(conn, table, rows, final=True)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.rows_written += n
        self.batches_written += 1

    def _insert_one_by_one(self, items: list[_Item]) -> None:
        refused: list[tuple[_Item, BaseException]] = []
        conn = self._conn
        n = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                conn.execute("SAVEPOINT one_record")
                try:
                    n += self._insert_item(conn, item)
                except _RECORD_ERRORS as exc:
                    conn.execute("ROLLBACK TO one_record")
                    refused.append((item, exc))
                conn.execute("RELEASE one_record")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.rows_written += n
        self.batches_written += 1
        if refused:
            with self._state_lock:
                self._refused.extend(item for item, _ in refused)
                for item, err in refused:
                    self._failures.append((f"SQLite refused {_describe(item)}: {err}", err))
                    self.errors += 1

    @staticmethod
    def _insert_item(conn: sqlite3.Connection, item: _Item) -> int:
        if isinstance(item, tuple):
            request, atts = item
            conn.execute(_REQUESTS.one, request.values())
            if atts:
                conn.executemany(_ATTEMPTS.one, [a.values() for a in atts])
            return 1 + len(atts)
        conn.execute((_EVENTS if isinstance(item, EventRecord) else _FEEDBACK).one, item.values())
        return 1

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is reopened before the retry; the original error is what matters


def _count_rows(items: list[_Item]) -> int:
    return sum(1 + len(item[1]) if isinstance(item, tuple) else 1 for item in items)


def _describe(item: _Item) -> str:
    if isinstance(item, tuple):
        return f"request {item[0].id!r}"
    if isinstance(item, EventRecord):
        return f"event {item.kind!r} at {item.ts}"
    return f"feedback for request {item.request_id!r}"
