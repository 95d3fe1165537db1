"""SQLite files shared by several ambassador processes (the sqlite cache store, async jobs)."""

from __future__ import annotations

import sqlite3
import time

BUSY_WAIT = 5.0  # seconds to wait for another process's lock on a shared file


def switch_to_wal(db: sqlite3.Connection, wait: float = BUSY_WAIT) -> None:
    """WAL mode: readers and a writer work at once, across processes too. The switch needs an
    exclusive lock, and SQLite does not wait for that one (no busy handler): two processes
    opening a new file at the same moment get "database is locked". Blocking: call it off the
    event loop."""
    deadline = time.monotonic() + wait
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
