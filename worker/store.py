"""The worker's memory across restarts, in `state_dir`: a small SQLite store and the
dead-letter record.

- settled: event ids whose outcome was settled, kept for `dedupe_ttl`, so an event
  redelivered after its delete was lost is not acted on twice;
- attempts: real attempt counts (a deferral is not an attempt, but MNS's DequeueCount
  counts it) and the plugins to resume when a failed or deferred message comes back;
  an attempt is counted when the worker takes the message on, before any plugin runs,
  so a crash counts one for every message the worker held;
- dead-letter.jsonl: every dead-lettered body, whatever else happens to it.

A corrupt database is moved aside with a warning and a fresh one started: losing dedupe
memory costs at most a repeated idempotent action; refusing to start costs every event.
Several processes may share one store (WAL, busy timeout).

The consumer's hot path uses one transaction per received batch (`begin_attempts`) and
one per burst of settled outcomes (`mark_settled_many`): per-message transactions,
serialised across handler threads, cost more than handling the messages.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

log = logging.getLogger("ecs_worker.store")

DB_NAME = "state.sqlite3"
DEAD_LETTER_NAME = "dead-letter.jsonl"
ATTEMPTS_TTL = 8 * 86400  # longer than MNS's longest retention (7 days)
MAX_KEYS = 400  # per statement: two parameters a key stays within SQLite's oldest limit (999)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS settled (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, attempts INTEGER NOT NULL DEFAULT 0,
                                     resume TEXT, updated REAL NOT NULL);
"""


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class Attempt:
    """What `begin_attempts` decided for one key."""

    settled: bool = False  # settled before: a redelivered copy, not to be handled again
    number: int = 0  # this attempt's number (counted); when exhausted, the attempts made
    exhausted: bool = False  # `max_attempts` made already: not counted, give up
    resume: dict[str, float | None] | None = None  # the plugins to call again; None = all


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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (another process may share the store)."""
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from None

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
        self.mark_settled_many([key])

    def mark_settled_many(self, keys: Sequence[str]) -> None:
        """`mark_settled` for a batch, in one transaction."""
        if not keys:
            return
        if len(keys) > MAX_KEYS:
            for i in range(0, len(keys), MAX_KEYS):
                self.mark_settled_many(keys[i:i + MAX_KEYS])
            return
        expires = self.clock() + self.dedupe_ttl
        unique = list(dict.fromkeys(keys))
        with self._transaction() as db:
            if self.dedupe_ttl > 0:
                db.execute(f"INSERT OR REPLACE INTO settled (key, expires) VALUES {_rows(len(unique), 2)}",
                           [v for k in unique for v in (k, expires)])
            db.execute(f"DELETE FROM attempts WHERE key IN {_rows(1, len(unique))}", unique)

    def settled_among(self, keys: Sequence[str]) -> set[str]:
        """The keys settled within the dedupe TTL: one read for a batch."""
        if not keys:
            return set()
        if len(keys) > MAX_KEYS:
            return {k for i in range(0, len(keys), MAX_KEYS)
                    for k in self.settled_among(keys[i:i + MAX_KEYS])}
        unique = list(dict.fromkeys(keys))
        rows = self._run(f"SELECT key FROM settled WHERE key IN {_rows(1, len(unique))} AND expires > ?",
                         (*unique, self.clock()))
        return {k for (k,) in rows}

    # -- attempts and resume ------------------------------------------------------
    def attempts(self, key: str) -> int:
        rows = self._run("SELECT attempts FROM attempts WHERE key = ?", (key,))
        return rows[0][0] if rows else 0

    def begin_attempts(self, keys: Sequence[str], max_attempts: int) -> list[Attempt]:
        """For a received batch, in one transaction: skip keys settled before, give up on
        keys with `max_attempts` made, count an attempt for each of the rest (before it
        runs: a crash meanwhile still counts) and read their resume lists.

        Returns one `Attempt` per key, in order; a key twice in the batch counts twice.
        """
        if not keys:
            return []
        if len(keys) > MAX_KEYS:
            return [a for i in range(0, len(keys), MAX_KEYS)
                    for a in self.begin_attempts(keys[i:i + MAX_KEYS], max_attempts)]
        unique = list(dict.fromkeys(keys))
        marks = _rows(1, len(unique))
        now = self.clock()
        with self._transaction() as db:  # few statements: sqlite3 lets other threads run at each
            rows = db.execute(f"SELECT key, -1, NULL FROM settled WHERE key IN {marks} AND expires > ? "
                              f"UNION ALL SELECT key, attempts, resume FROM attempts WHERE key IN {marks}",
                              (*unique, now, *unique)).fetchall()
            settled = {k for k, n, _ in rows if n == -1}
            known = {k: (n, r) for k, n, r in rows if n != -1}
            made = {k: known[k][0] if k in known else 0 for k in unique}
            out, counted = [], []
            for key in keys:
                if key in settled:
                    out.append(Attempt(settled=True))
                elif made[key] >= max_attempts:
                    out.append(Attempt(number=made[key], exhausted=True))
                else:
                    made[key] += 1
                    counted.append(key)
                    out.append(Attempt(number=made[key],
                                       resume=_resume_list(known[key][1]) if key in known else None))
            if counted:
                db.execute("INSERT INTO attempts (key, attempts, updated) VALUES "
                           + ", ".join(["(?, 1, ?)"] * len(counted))
                           + " ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, "
                           "updated = excluded.updated", [v for k in counted for v in (k, now)])
        return out

    def begin_attempt(self, key: str) -> int:
        """Count an attempt before it runs (a crash mid-attempt still counts); return the count."""
        with self._transaction() as db:  # no RETURNING: older distributions ship SQLite < 3.35
            db.execute("INSERT INTO attempts (key, attempts, updated) VALUES (?, 1, ?) "
                       "ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, "
                       "updated = excluded.updated", (key, self.clock()))
            return db.execute("SELECT attempts FROM attempts WHERE key = ?", (key,)).fetchone()[0]

    def undo_attempt(self, key: str) -> None:
        """A deferral is not an attempt."""
        self._run("UPDATE attempts SET attempts = MAX(attempts - 1, 0) WHERE key = ?", (key,))

    def resume(self, key: str) -> dict[str, float | None] | None:
        """The plugins to call again (plugin -> deferred_since), or None for all."""
        rows = self._run("SELECT resume FROM attempts WHERE key = ?", (key,))
        return _resume_list(rows[0][0]) if rows else None

    def set_resume(self, key: str, plugins: Mapping[str, float | None]) -> None:
        self._run("INSERT INTO attempts (key, attempts, resume, updated) VALUES (?, 0, ?, ?) "
                  "ON CONFLICT(key) DO UPDATE SET resume = excluded.resume, updated = excluded.updated",
                  (key, json.dumps(dict(plugins)), self.clock()))

    def deferred(self, key: str, plugins: Mapping[str, float | None]) -> None:
        """A deferral: take its attempt back and keep the plugins to resume (one write)."""
        self._run("INSERT INTO attempts (key, attempts, resume, updated) VALUES (?, 0, ?, ?) "
                  "ON CONFLICT(key) DO UPDATE SET attempts = MAX(attempts - 1, 0), "
                  "resume = excluded.resume, updated = excluded.updated",
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


def _resume_list(text: str | None) -> dict[str, float | None] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _rows(count: int, width: int) -> str:
    """`(?, ?), (?, ?)` for `count` rows of `width` parameters: a batch in one statement."""
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * count)
