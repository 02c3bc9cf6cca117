"""The default state store (`store_api.StateStore`): SQLite in `state_dir`, plus the
dead-letter record.

- settled: message keys (`keys.py`) settled within `dedupe_ttl`: a redelivered copy (a
  lost delete) is not acted on twice;
- attempts: attempt counts and the plugins to resume. An attempt counts when it *ends* in
  failure (`failed`), or, for a worker that died, by `crashed` for the one message that
  was running alone (`crashes.py`); `suspect` marks messages that were running when a
  worker died: they run alone until they finish once;
- dead_letters: ids already written to `dead-letter.jsonl` (once per message);
- claims, budgets, plugin state, removal reservations: `store_sqlite_shared.py`.

A corrupt database is moved aside with a warning and a fresh one started: losing dedupe
memory costs at most a repeated idempotent action; refusing to start costs every event.
Several processes may share one store (WAL, busy timeout). Files are created 0600 and
the directory 0700, with or without systemd's `UMask=`.

The SQLite file's schema, and how an older one is migrated, are in `schema.py`.

The consumer's hot path uses one step per received batch (`take`) and one transaction
per burst of settled outcomes (`mark_settled_many`): per-message transactions,
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
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .dead_letter_file import record_once
from .schema import SCHEMA_VERSION, connect  # SCHEMA_VERSION: re-exported (tests, doctor)
from ..events.keys import safe_key
from .store_sqlite_shared import SqliteShared
from .store_types import Attempt, StoreError

__all__ = ["Attempt", "SCHEMA_VERSION", "Store", "StoreError", "make_private_dir"]

log = logging.getLogger("ecs_worker.store")

DB_NAME = "state.sqlite3"
DEAD_LETTER_NAME = "dead-letter.jsonl"
ATTEMPTS_TTL = 8 * 86400  # longer than MNS's longest retention (7 days)
MAX_KEYS = 400  # per statement: two parameters a key stays within SQLite's oldest limit (999)
class Store(SqliteShared):
    def __init__(self, state_dir: str | Path, dedupe_ttl: float = 86400,
                 clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / DB_NAME
        self.dead_letter_path = self.dir / DEAD_LETTER_NAME
        self.dedupe_ttl = dedupe_ttl
        self.clock = clock
        self._lock = threading.Lock()
        make_private_dir(self.dir)
        self._db = self._open()
        self.purge()

    # -- opening ------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            return connect(self.path)
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
                return connect(self.path)
            except sqlite3.DatabaseError as exc2:
                raise StoreError(f"{self.path}: cannot open: {exc2}") from None

    shared = False  # this host only (workers sharing the state_dir share it)

    def problem(self) -> str | None:
        """SQLite fails loudly on each call (a disk fault); nothing lingers to report."""
        return None

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

    def _run(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.path}: {exc}") from None

    # -- dedupe -------------------------------------------------------------------
    def mark_settled_many(self, keys: Sequence[str]) -> None:
        """Remember `keys` as settled for the dedupe TTL and forget their attempts, in one
        transaction."""
        if not keys:
            return
        if len(keys) > MAX_KEYS:
            for i in range(0, len(keys), MAX_KEYS):
                self.mark_settled_many(keys[i:i + MAX_KEYS])
            return
        expires = self.clock() + self.dedupe_ttl
        unique = list(dict.fromkeys(safe_key(k) for k in keys))
        with self._transaction() as db:
            if self.dedupe_ttl > 0:
                db.execute(f"INSERT OR REPLACE INTO settled (key, expires) VALUES {_rows(len(unique), 2)}",
                           [v for k in unique for v in (k, expires)])
            db.execute(f"DELETE FROM attempts WHERE key IN {_rows(1, len(unique))}", unique)
            db.execute(f"DELETE FROM claims WHERE key IN {_rows(1, len(unique))}", unique)

    # -- attempts and resume ------------------------------------------------------
    def take(self, keys: Sequence[str], max_attempts: int, owners: Sequence[str] = (),
             hold: float = 0) -> list[Attempt]:
        """For a received batch, in one step: which keys were settled before, how many
        attempts each has made, their resume lists and whether they are crash suspects.
        Nothing is counted here: taking a message on costs it nothing. With `owners` (a
        message id for each of the first len(owners) keys; the rest are only looked up) each
        such unsettled key is claimed for `hold` seconds; a key another copy holds is `busy`.
        """
        if not keys:
            return []
        if len(keys) > MAX_KEYS:
            return [a for i in range(0, len(keys), MAX_KEYS)
                    for a in self.take(keys[i:i + MAX_KEYS], max_attempts, owners[i:i + MAX_KEYS], hold)]
        safe = [safe_key(k) for k in keys]
        unique = list(dict.fromkeys(safe))
        marks = _rows(1, len(unique))
        query = (f"SELECT key, -1, NULL, 0 FROM settled WHERE key IN {marks} AND expires > ? "
                 f"UNION ALL SELECT key, attempts, resume, suspect FROM attempts WHERE key IN {marks}")
        busy: set[str] = set()
        if owners:
            with self._transaction() as db:
                rows = db.execute(query, (*unique, self.clock(), *unique)).fetchall()
                done = {k for k, n, _, _ in rows if n == -1}
                claims = [(k, o) for k, o in zip(safe, owners) if k not in done]  # the first len(owners)
                busy = self._claim(db, [k for k, _ in claims], [o for _, o in claims], hold)
        else:
            rows = self._run(query, (*unique, self.clock(), *unique))
        settled = {k for k, n, _, _ in rows if n == -1}
        known = {k: (n, r, s) for k, n, r, s in rows if n != -1}
        out = []
        for key in safe:
            if key in settled:
                out.append(Attempt(settled=True))
                continue
            made, resume, suspect = known.get(key, (0, None, 0))
            out.append(Attempt(made=made, exhausted=made >= max_attempts, resume=_resume_list(resume),
                               suspect=bool(suspect), busy=key in busy))
        return out

    def failed(self, key: str, plugins: Mapping[str, float | None] | None, crashed: bool = False,
               owner: str = "") -> int:
        """An attempt that failed: count it, keep the plugins to resume (None: all), end
        `owner`'s claim; returns the count. It finished: no longer a crash suspect, unless it
        `crashed` its quarantine."""
        key = safe_key(key)
        with self._transaction() as db:  # no RETURNING: older distributions ship SQLite < 3.35
            db.execute("INSERT INTO attempts (key, attempts, resume, updated) VALUES (?, 1, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, resume = excluded.resume, "
                       "updated = excluded.updated, suspect = ?",
                       (key, None if plugins is None else json.dumps(dict(plugins)), self.clock(), int(crashed)))
            db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))
            return db.execute("SELECT attempts FROM attempts WHERE key = ?", (key,)).fetchone()[0]

    def deferred(self, key: str, plugins: Mapping[str, float | None], attempts: int | None = None,
                 owner: str = "") -> None:
        """A deferral, which is not an attempt: keep the plugins to resume and end `owner`'s
        claim (one write). `attempts` (a re-sent message's own count, `deferred.py`) raises
        the count to it."""
        key = safe_key(key)
        with self._transaction() as db:
            db.execute("INSERT INTO attempts (key, attempts, resume, updated) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET attempts = MAX(attempts, excluded.attempts), "
                       "resume = excluded.resume, updated = excluded.updated, suspect = 0",
                       (key, attempts or 0, json.dumps(dict(plugins)), self.clock()))
            db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))

    def crashed(self, charged: Sequence[str], suspects: Sequence[str]) -> None:
        """A worker died with `suspects` running: mark them to be run alone; `charged`
        (the one that was running alone) also counts an attempt. One transaction."""
        now = self.clock()
        with self._transaction() as db:
            for key in dict.fromkeys(safe_key(k) for k in [*suspects, *charged]):
                db.execute("DELETE FROM claims WHERE key = ?", (key,))  # its worker is gone
            for key in dict.fromkeys(safe_key(k) for k in suspects):
                db.execute("INSERT INTO attempts (key, attempts, updated, suspect) VALUES (?, 0, ?, 1) "
                           "ON CONFLICT(key) DO UPDATE SET suspect = 1, updated = excluded.updated",
                           (key, now))
            for key in charged:
                db.execute("INSERT INTO attempts (key, attempts, updated, suspect) VALUES (?, 1, ?, 1) "
                           "ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, suspect = 1, "
                           "updated = excluded.updated", (safe_key(key), now))

    def purge(self) -> None:
        now = self.clock()
        self._run("DELETE FROM settled WHERE expires <= ?", (now,))
        self._run("DELETE FROM attempts WHERE updated <= ?", (now - ATTEMPTS_TTL,))
        self._run("DELETE FROM dead_letters WHERE recorded <= ?", (now - ATTEMPTS_TTL,))
        self.purge_shared()

    # -- dead letters -------------------------------------------------------------
    def record_dead_letter(self, record: Mapping[str, Any]) -> bool:
        """Append one JSON line and fsync, once per `message_id` (`dead_letter_file.record_once`)."""
        return record_once(self.dead_letter_path, record, self._dead_letter_note)

    def _dead_letter_note(self, key: str, written: bool | None = None) -> bool | None:
        """Read the note (None: none), or write it (`written` False: being written)."""
        if written is None:
            rows = self._run("SELECT written FROM dead_letters WHERE message_id = ?", (key,))
            return bool(rows[0][0]) if rows else None
        self._run("INSERT OR REPLACE INTO dead_letters (message_id, recorded, written) VALUES (?, ?, ?)",
                  (key, self.clock(), int(written)))
        return written


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) 0700; an existing directory is left as it is."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"state_dir {path}: cannot create: {exc.strerror}") from None


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
