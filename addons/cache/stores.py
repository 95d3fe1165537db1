"""Where entries live: one async interface, three stores.

A store maps a primary key (the target URI) to the list of its stored variants (RFC 9111 4.1).
`keep_for` is how long the variants stay of any use; stores drop them after that.

- `MemoryStore`: in process, least recently used evicted beyond `max_bytes`. Entries are kept
  as objects: a hit copies nothing.
- `SqliteStore`: a file that survives restarts; one dedicated thread owns the connection, so
  the event loop never waits on the disk and requests never share a connection unsafely.
- `RedisStore` (`redis_store.py`): the profile's `state`, shared by several ambassador instances.

`Guarded` wraps any of them: a failing store (Redis down, disk full) degrades to a cache that
stores nothing, with one warning per outage instead of failed requests.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from ..sqlite_wal import BUSY_WAIT, switch_to_wal
from .entry import Entry, dump_variants, load_variants

log = logging.getLogger("ambassador.cache")

OUTAGE_PAUSE = 2.0  # seconds a failed store is left alone before it is tried again
# A memory store item's own bookkeeping: its (variants, size, expiry) tuple and ordered-dict slot.
ITEM_OVERHEAD = 256


class Store(Protocol):
    entries: int  # stored URIs (as far as this process knows, for shared stores)

    async def get(self, key: str) -> list[Entry] | None: ...

    async def put(self, key: str, variants: list[Entry], keep_for: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def clear(self, prefix: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        # key -> (variants, their size, monotonic time they stop being of use)
        self.items: OrderedDict[str, tuple[list[Entry], int, float]] = OrderedDict()

    @property
    def entries(self) -> int:
        return len(self.items)

    async def get(self, key: str) -> list[Entry] | None:
        item = self.items.get(key)
        if item is None:
            return None
        if item[2] < time.monotonic():
            self._remove(key)
            return None
        self.items.move_to_end(key)
        return item[0]

    async def put(self, key: str, variants: list[Entry], keep_for: float) -> None:
        self._remove(key)
        size = sum(e.size for e in variants) + sys.getsizeof(key) + sys.getsizeof(variants) + ITEM_OVERHEAD
        if size > self.max_bytes:
            return
        self.items[key] = (variants, size, time.monotonic() + keep_for)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self.items)))

    async def delete(self, key: str) -> None:
        self._remove(key)

    async def clear(self, prefix: str) -> None:
        for key in [k for k in self.items if k.startswith(prefix)]:
            self._remove(key)

    def _remove(self, key: str) -> None:
        item = self.items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    async def close(self) -> None:
        self.items.clear()
        self.bytes = 0


class SqliteStore:
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS cache (
            key TEXT PRIMARY KEY, value BLOB NOT NULL, size INTEGER NOT NULL,
            expires REAL NOT NULL, used REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS cache_used ON cache (used);
    """

    def __init__(self, path: Path, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self.entries = 0
        self.bytes = 0  # this process's estimate; recounted before evicting
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"cache-sqlite-{path.name}")
        self.db: sqlite3.Connection | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # Everything below named _sync_* runs on the store's own thread.

    def _connection(self) -> sqlite3.Connection:
        if self.db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_WAIT * 1000)}")
            switch_to_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(self.SCHEMA)
            self.entries, self.bytes = db.execute("SELECT count(*), total(size) FROM cache").fetchone()
            self.bytes = int(self.bytes)
            self.db = db
        return self.db

    def _sync_get(self, key: str) -> bytes | None:
        db = self._connection()
        row = db.execute("SELECT value, expires FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        now = time.time()
        if row[1] < now:
            self._sync_delete(key)
            return None
        db.execute("UPDATE cache SET used = ? WHERE key = ?", (now, key))
        return row[0]

    def _sync_put(self, key: str, blob: bytes, keep_for: float) -> None:
        db = self._connection()
        now = time.time()
        with db:
            db.execute("BEGIN IMMEDIATE")
            old = db.execute("SELECT size FROM cache WHERE key = ?", (key,)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO cache (key, value, size, expires, used) VALUES (?, ?, ?, ?, ?)",
                (key, blob, len(blob), now + keep_for, now),
            )
        self.entries += old is None
        self.bytes += len(blob) - (old[0] if old else 0)
        if self.bytes > self.max_bytes:
            self._sync_evict(now)

    def _sync_evict(self, now: float) -> None:
        """Expired rows first, then the least recently used, until the file's bodies fit max_bytes."""
        db = self._connection()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM cache WHERE expires < ?", (now,))
            (total,) = db.execute("SELECT total(size) FROM cache").fetchone()
            excess = total - self.max_bytes
            if excess > 0:
                freed = 0
                victims = []
                for key, size in db.execute("SELECT key, size FROM cache ORDER BY used"):
                    if freed >= excess:
                        break
                    victims.append((key,))
                    freed += size
                db.executemany("DELETE FROM cache WHERE key = ?", victims)
            self.entries, total = db.execute("SELECT count(*), total(size) FROM cache").fetchone()
            self.bytes = int(total)

    def _sync_delete(self, key: str) -> None:
        db = self._connection()
        row = db.execute("DELETE FROM cache WHERE key = ? RETURNING size", (key,)).fetchone()
        if row is not None:
            self.entries -= 1
            self.bytes -= row[0]

    def _sync_clear(self, prefix: str) -> None:
        db = self._connection()
        db.execute("DELETE FROM cache WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        self.entries, total = db.execute("SELECT count(*), total(size) FROM cache").fetchone()
        self.bytes = int(total)

    def _sync_close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    async def get(self, key: str) -> list[Entry] | None:
        blob = await self._run(self._sync_get, key)
        return None if blob is None else load_variants(blob)

    async def put(self, key: str, variants: list[Entry], keep_for: float) -> None:
        await self._run(self._sync_put, key, dump_variants(variants), keep_for)

    async def delete(self, key: str) -> None:
        await self._run(self._sync_delete, key)

    async def clear(self, prefix: str) -> None:
        await self._run(self._sync_clear, prefix)

    async def close(self) -> None:
        await self._run(self._sync_close)
        self.executor.shutdown(wait=False)


class Guarded:
    """A store whose failures become misses and skipped writes, logged once per outage.

    After a failure the store is left alone for `OUTAGE_PAUSE` seconds: a store that hangs
    would otherwise cost every request its timeout, twice (read and write).
    """

    def __init__(self, store: Store, upstream_name: str):
        self.store = store
        self.upstream_name = upstream_name
        self.failing = False
        self.paused_until = 0.0

    def _paused(self) -> bool:
        return self.failing and time.monotonic() < self.paused_until

    @property
    def entries(self) -> int:
        return self.store.entries

    def _failed(self, error: Exception) -> None:
        self.paused_until = time.monotonic() + OUTAGE_PAUSE
        if not self.failing:
            self.failing = True
            log.warning(
                "upstream %s: cache store failed (%s: %s); answering without the cache until it recovers",
                self.upstream_name, type(error).__name__, error,
            )

    def _succeeded(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("upstream %s: cache store recovered", self.upstream_name)

    async def get(self, key: str) -> list[Entry] | None:
        if self._paused():
            return None
        try:
            variants = await self.store.get(key)
        except Exception as e:  # any store failure must degrade, never fail the request
            self._failed(e)
            return None
        self._succeeded()
        return variants

    async def put(self, key: str, variants: list[Entry], keep_for: float) -> None:
        await self._write(self.store.put(key, variants, keep_for))

    async def delete(self, key: str) -> None:
        await self._write(self.store.delete(key))

    async def _write(self, operation) -> None:
        if self._paused():
            operation.close()  # never started: nothing to wait for
            return
        try:
            await operation
        except Exception as e:  # as in get()
            self._failed(e)
        else:
            self._succeeded()

    async def clear(self, prefix: str) -> None:
        await self._write(self.store.clear(prefix))

    async def close(self) -> None:
        await self.store.close()
