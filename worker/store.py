"""The worker's memory across restarts, in `state_dir`: a small SQLite store and the
dead-letter record.

- settled: event ids whose outcome was settled, kept for `dedupe_ttl`, so an event
  redelivered after its delete was lost is not acted on twice;
- attempts: real attempt counts (a deferral is not an attempt, but MNS's DequeueCount
  counts it) and the plugins to resume when a failed or deferred message comes back;
- dead-letter.jsonl: every dead-lettered body, whatever else happens to it.

A corrupt database is moved aside with a warning and a fresh one started: losing dedupe
memory costs at most a repeated idempotent action; refusing to start costs every event.
Several processes may share one store (WAL, busy timeout).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger("ecs_worker.store")

DB_NAME = "state.sqlite3"
DEAD_LETTER_NAME = "dead-letter.jsonl"
ATTEMPTS_TTL = 8 * 86400  # longer than MNS's longest retention (7 days)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS settled (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, attempts INTEGER NOT NULL DEFAULT 0,
                                     resume TEXT, updated REAL NOT NULL);
"""


class StoreError(RuntimeError):
    pass


class Store:
    def __init__(self, state_dir: str | Path, dedupe_ttl: float = 86400,
                 clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / DB_NAME
        self.dead_letter_path = self.dir / DEAD_LETTER_NAME
        self.dedupe_ttl = dedupe_ttl
        self.clock = clock
        self._lock = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"state_dir {self.dir}: cannot create: {exc.strerror}") from None
        self._db = self._open()
        self.purge()

    # -- opening ------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.OperationalError as exc:  # permissions, locks: not corruption
            raise StoreError(f"{self.path}: cannot open: {exc}") from None
        except sqlite3.DatabaseError as exc:
            if not self.path.exists():
                raise StoreError(f"{self.path}: cannot open: {exc}") from None
            aside = self.path.with_name(f"{DB_NAME}.corrupt-{int(self.clock())}")
            log.warning("state store %s is unreadable (%s); moved aside to %s, starting afresh "
                        "(events settled before may be handled once more)", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
            try:
                return self._connect()
            except sqlite3.DatabaseError as exc2:
                raise StoreError(f"{self.path}: cannot open: {exc2}") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from None

    # -- dedupe -------------------------------------------------------------------
    def is_settled(self, key: str) -> bool:
        rows = self._run("SELECT 1 FROM settled WHERE key = ? AND expires > ?", (key, self.clock()))
        return bool(rows)

    def mark_settled(self, key: str) -> None:
        """Remember `key` as settled for the dedupe TTL; forget its attempts."""
        if self.dedupe_ttl > 0:
            self._run("INSERT OR REPLACE INTO settled (key, expires) VALUES (?, ?)",
                      (key, self.clock() + self.dedupe_ttl))
        self._run("DELETE FROM attempts WHERE key = ?", (key,))

    # -- attempts and resume ------------------------------------------------------
    def attempts(self, key: str) -> int:
        rows = self._run("SELECT attempts FROM attempts WHERE key = ?", (key,))
        return rows[0][0] if rows else 0

    def begin_attempt(self, key: str) -> int:
        """Count an attempt before it runs (a crash mid-attempt still counts); return the count."""
        with self._lock:  # no RETURNING: older distributions ship SQLite < 3.35
            try:
                with self._db:  # one transaction: another process may share the store
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute("INSERT INTO attempts (key, attempts, updated) VALUES (?, 1, ?) "
                                     "ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, "
                                     "updated = excluded.updated", (key, self.clock()))
                    return self._db.execute("SELECT attempts FROM attempts WHERE key = ?",
                                            (key,)).fetchone()[0]
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from None

    def undo_attempt(self, key: str) -> None:
        """A deferral is not an attempt."""
        self._run("UPDATE attempts SET attempts = MAX(attempts - 1, 0) WHERE key = ?", (key,))

    def resume(self, key: str) -> dict[str, float | None] | None:
        """The plugins to call again (plugin -> deferred_since), or None for all."""
        rows = self._run("SELECT resume FROM attempts WHERE key = ?", (key,))
        if not rows or rows[0][0] is None:
            return None
        try:
            value = json.loads(rows[0][0])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def set_resume(self, key: str, plugins: Mapping[str, float | None]) -> None:
        self._run("INSERT INTO attempts (key, attempts, resume, updated) VALUES (?, 0, ?, ?) "
                  "ON CONFLICT(key) DO UPDATE SET resume = excluded.resume, updated = excluded.updated",
                  (key, json.dumps(dict(plugins)), self.clock()))

    def forget(self, key: str) -> None:
        self._run("DELETE FROM attempts WHERE key = ?", (key,))

    def purge(self) -> None:
        now = self.clock()
        self._run("DELETE FROM settled WHERE expires <= ?", (now,))
        self._run("DELETE FROM attempts WHERE updated <= ?", (now - ATTEMPTS_TTL,))

    # -- dead letters -------------------------------------------------------------
    def record_dead_letter(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line and fsync: after this returns the record survives a crash."""
        line = json.dumps(dict(record), ensure_ascii=False, default=str) + "\n"
        try:
            fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8", "surrogateescape"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"{self.dead_letter_path}: cannot write: {exc.strerror}") from None
