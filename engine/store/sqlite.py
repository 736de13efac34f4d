"""Opening SQLite files shared by several processes."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, timeout_s: float = 5.0) -> None:
    """Put the file in WAL mode, waiting out other processes doing the same.

    Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, while another process holds it (several
    workers or routers starting together). Retry until `timeout_s`, as a plain write would wait.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)  # noqa: TID251 - only while opening the file, never per request
