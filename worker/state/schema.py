"""The store's SQLite file (`store.py`): created 0600 before SQLite opens it, checked,
put in WAL mode, and its schema created or migrated in one transaction.

Schema version 2 (issue 10) keys rows by the message key instead of the bare event id.
Older databases are migrated in place: the new columns and table are added; rows keyed
by a bare id are kept and simply expire (`dedupe_ttl`, `ATTEMPTS_TTL`). A message whose
delete was lost just before the upgrade may therefore be handled once more — what
at-least-once allows anyway. Version 3 (issue 22) adds the tables of `store_sqlite_shared.py`.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .store_sqlite_shared import SCHEMA as SHARED_SCHEMA

SCHEMA_VERSION = 3  # 3: the shared parts (store_sqlite_shared.py)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS settled (key TEXT PRIMARY KEY, expires REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, attempts INTEGER NOT NULL DEFAULT 0, "
    "resume TEXT, updated REAL NOT NULL, suspect INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS dead_letters (message_id TEXT PRIMARY KEY, recorded REAL NOT NULL, "
    "written INTEGER NOT NULL DEFAULT 0)",
    *SHARED_SCHEMA,
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) the file; raises `sqlite3.DatabaseError` when it is not a sound store."""
    try:  # 0600 before SQLite opens it: its -wal and -shm files take the same mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise sqlite3.OperationalError(exc.strerror) from None
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("integrity check failed")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash
        migrate(db)
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def migrate(db: sqlite3.Connection) -> None:
    """Create or upgrade the schema (see the module doc), in one transaction."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated it meanwhile.
        if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
            if "suspect" not in columns:  # a version 1 database
                db.execute("ALTER TABLE attempts ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
