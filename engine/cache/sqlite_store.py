"""The SQLite reply cache: one WAL file in the cache dir, private, capped in size.

All SQL runs on one dedicated thread. Writes are queued to it without waiting (the reply is
already in the in-process LRU), so storing a reply costs its caller almost nothing; `aclose`
waits for them. Rows past their TTL are dropped when read and swept now and then; over the
size cap, the oldest rows go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from muxtui.engine.cache.store import ResponseCache

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger("muxtui.engine.cache")

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
"""
SWEEP_EVERY = 256  # puts between sweeps of expired rows
_EVICT_TO = 0.9  # over the cap, evict down to this share of it


class SqliteCache(ResponseCache):
    """Replies in a SQLite file (WAL), with a TTL and a size cap in MiB."""

    backend = "sqlite"

    def __init__(self, path: Path, ttl: int, max_mb: float) -> None:
        super().__init__(ttl)
        self.path = path
        self.max_bytes = int(max_mb * 2**20) if max_mb > 0 else 0
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="muxtui-cache"
        )
        self._db: sqlite3.Connection | None = None
        self._broken = False
        self._total = 0  # bytes of values stored, as this process last counted
        self._puts = 0

    # --- the event loop's side ------------------------------------------------------------------

    async def _fetch(self, key: str) -> bytes | None:
        executor = self._executor
        if executor is None or self._broken:
            return None
        return await asyncio.get_running_loop().run_in_executor(executor, self._read, key)

    async def _store(self, key: str, value: bytes) -> None:
        executor = self._executor
        if executor is not None and not self._broken:
            executor.submit(self._write, key, value, time.time(), self._expires())

    async def aclose(self) -> None:
        """Finish queued writes, close the file and stop the thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=False)

    # --- the thread's side -----------------------------------------------------------------------

    def where(self) -> str:
        """The SQLite file."""
        return f"SQLite file {self.path}"

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None and not self._broken:
            try:
                self._db = self._connect()
            except (OSError, sqlite3.Error) as exc:
                self._fail("cannot open", exc)
        return self._db

    def _connect(self) -> sqlite3.Connection:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        # The file exists, private, before SQLite makes its -wal and -shm from its mode.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=2000")
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a new file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._total = int(
                db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0]
            )
        except BaseException:
            db.close()
            raise
        return db

    def _fail(self, doing: str, exc: BaseException) -> None:
        if self.healthy:
            log.warning("response cache: %s %s (%s); replies go uncached", doing, self.path, exc)
        self.healthy = False
        if doing == "cannot open":
            self._broken = True

    def _read(self, key: str) -> bytes | None:
        db = self._connection()
        if db is None:
            return None
        try:
            row = db.execute(
                "SELECT value, expires FROM responses WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            value, expires = row
            if expires and expires < time.time():
                db.execute("DELETE FROM responses WHERE key = ?", (key,))
                return None
        except sqlite3.Error as exc:
            self._fail("cannot read", exc)
            return None
        self.healthy = True
        return bytes(value)

    def _write(self, key: str, value: bytes, created: float, expires: float) -> None:
        db = self._connection()
        if db is None:
            return
        try:
            db.execute(
                "INSERT OR REPLACE INTO responses (key, value, size, created, expires) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, value, len(value), created, expires),
            )
            self._total += len(value)
            self._puts += 1
            if self._puts % SWEEP_EVERY == 0 and self.ttl:
                db.execute(
                    "DELETE FROM responses WHERE expires > 0 AND expires < ?", (time.time(),)
                )
                self._recount(db)
            if self.max_bytes and self._total > self.max_bytes:
                self._evict(db)
        except sqlite3.Error as exc:
            self._fail("cannot write", exc)
            return
        self.healthy = True

    def _recount(self, db: sqlite3.Connection) -> None:
        self._total = int(db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0])

    def _evict(self, db: sqlite3.Connection) -> None:
        """Drop the oldest rows until the values fit in the cap again (with some room)."""
        self._recount(db)  # other processes write to the same file
        excess = self._total - int(self.max_bytes * _EVICT_TO)
        if self._total <= self.max_bytes or excess <= 0:
            return
        doomed: list[str] = []
        freed = 0
        while freed < excess:
            rows = db.execute(
                "SELECT key, size FROM responses ORDER BY created LIMIT 256 OFFSET ?",
                (len(doomed),),
            ).fetchall()
            if not rows:
                break
            for key, size in rows:
                doomed.append(key)
                freed += size
                if freed >= excess:
                    break
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM responses WHERE key = ?", ((k,) for k in doomed))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._total -= freed
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA incremental_vacuum")

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
