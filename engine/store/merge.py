"""Several decision logs read as one: each replica of a deployment keeps its own SQLite log.

`merged_log(paths)` yields a path to read: the file itself when there is one, else a temporary
file holding the rows of all of them (made with the current migrations, so older files merge
too). Request ids are unique across processes, so request rows never collide; attempt, feedback
and event rows get fresh row ids and keep their `request_id`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["merge_logs", "merged_log"]

_TABLES = ("requests", "attempts", "feedback", "events")


def merge_logs(paths: Sequence[str | Path], into: str | Path) -> None:
    """Copy every row of the logs in `paths` into the (new or migrated) log `into`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: the same file is given twice (its attempts would count twice).
    """
    import sqlite_utils

    from engine.store.migrations import migrate

    seen: set[Path] = set()
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"{p}: no such decision log")
        if path.resolve() in seen:
            raise ValueError(f"{p} is given twice")
        seen.add(path.resolve())
    target = sqlite_utils.Database(str(into))
    migrate(target)
    con = target.conn
    columns = {t: [c.name for c in target[t].columns] for t in _TABLES}
    for p in paths:
        con.execute("ATTACH DATABASE ? AS src", (str(p),))
        try:
            con.execute("BEGIN")
            for table in _TABLES:
                have = {r[1] for r in con.execute(f"PRAGMA src.table_info({table})")}
                # integer row ids restart in every file: only the request ids are global
                cols = [c for c in columns[table] if c in have and (table == "requests" or c != "id")]
                if cols:
                    names = ", ".join(f'"{c}"' for c in cols)
                    con.execute(f"INSERT OR IGNORE INTO main.{table} ({names}) SELECT {names} FROM src.{table}")
            con.execute("COMMIT")
        except sqlite3.Error:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.execute("DETACH DATABASE src")
    target.close()


@contextlib.contextmanager
def merged_log(paths: Sequence[str]) -> Iterator[str]:
    """The one file to read for `paths`: itself when single, else a temporary merge of all of them."""
    if len(paths) == 1:
        yield paths[0]
        return
    with tempfile.TemporaryDirectory(prefix="engine-logs-") as tmp:
        merged = str(Path(tmp) / "merged.db")
        merge_logs(paths, merged)
        yield merged
