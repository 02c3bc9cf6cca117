"""The SQLite store's side of what a shared store (`store_api.StateStore`) keeps beyond
attempts and dedupe: claims on running messages, budgets, plugin state and load-balancer
removal reservations. A mixin of `store.Store`: one database, one lock, one transaction
per step; what the Redis store does in one script, this does in one `BEGIN IMMEDIATE`.

Workers on one host that share a `state_dir` share all of it; clocks are this host's.
"""
from __future__ import annotations

import copy
import json
import math
import sqlite3
import threading
from typing import Any, Sequence

from ..events.keys import safe_key
from .store_types import Reserved, Slot, StoreError, Taken

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS budget_takes (budget TEXT NOT NULL, token TEXT NOT NULL, at REAL NOT NULL, "
    "expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS budget_takes_by_budget ON budget_takes (budget, at)",
    "CREATE TABLE IF NOT EXISTS plugin_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS reservations (grp TEXT NOT NULL, holder TEXT NOT NULL, expires REAL NOT NULL, "
    "PRIMARY KEY (grp, holder))",
)


class SqliteShared:
    """Needs `self._transaction()`, `self._run()`, `self.clock`, `self.path`, `self._db` and
    `self._lock` from `store.Store`."""

    def forked(self) -> Any:
        """This store for a forked child (`quarantine.py`): its own connection and lock (a
        SQLite connection must not cross a fork; another thread may have held the lock)."""
        child = copy.copy(self)
        child._lock = threading.Lock()
        try:
            child._db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            child._db.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from None
        return child

    def _claim(self, db, keys: Sequence[str], owners: Sequence[str], hold: float) -> set[str]:
        """Claim each key for its owner (a message id) for `hold` seconds, in the caller's
        transaction; returns the keys another owner holds (busy)."""
        now = self.clock()
        busy = set()
        for key, owner in zip(keys, owners):
            row = db.execute("SELECT owner FROM claims WHERE key = ? AND expires > ?", (key, now)).fetchone()
            if row and row[0] != owner:
                busy.add(key)
                continue
            db.execute("INSERT OR REPLACE INTO claims (key, owner, expires) VALUES (?, ?, ?)",
                       (key, owner, now + hold))
        return busy

    def unclaim(self, claims: Sequence[tuple[str, str]]) -> None:
        """End each (key, owner) claim its owner still holds (`store_api`), one transaction."""
        if claims:
            with self._transaction() as db:
                db.executemany("DELETE FROM claims WHERE key = ? AND owner = ?",
                               [(safe_key(k), owner) for k, owner in claims])

    # -- budgets ------------------------------------------------------------------
    def take_budgets(self, slots: Sequence[Slot], token: str) -> Taken:
        """Take one unit of every budget in `slots`, all or none, in one transaction."""
        now = self.clock()
        with self._transaction() as db:
            for i, slot in enumerate(slots):
                key = safe_key(slot.key)
                db.execute("DELETE FROM budget_takes WHERE budget = ? AND at <= ?", (key, now - slot.per))
                times = [t for (t,) in db.execute("SELECT at FROM budget_takes WHERE budget = ? ORDER BY at",
                                                  (key,))]
                if len(times) >= slot.limit:
                    return Taken(i, max(times[len(times) - slot.limit] + slot.per - now, 0.0))
            for slot in slots:
                db.execute("INSERT INTO budget_takes (budget, token, at, expires) VALUES (?, ?, ?, ?)",
                           (safe_key(slot.key), token, now, now + slot.per))
        return Taken()

    def give_back(self, keys: Sequence[str], token: str) -> None:
        """Undo a take (the action did not happen)."""
        with self._transaction() as db:
            for key in keys:
                db.execute("DELETE FROM budget_takes WHERE budget = ? AND token = ?", (safe_key(key), token))

    # -- plugin state ---------------------------------------------------------------
    def put_state(self, key: str, value: Any, ttl: float) -> None:
        self._run("INSERT OR REPLACE INTO plugin_state (key, value, expires) VALUES (?, ?, ?)",
                  (safe_key(key), json.dumps(value), self.clock() + ttl))

    def get_state(self, key: str) -> Any:
        rows = self._run("SELECT value FROM plugin_state WHERE key = ? AND expires > ?", (safe_key(key), self.clock()))
        return json.loads(rows[0][0]) if rows else None

    def delete_state(self, key: str) -> None:
        self._run("DELETE FROM plugin_state WHERE key = ?", (safe_key(key),))

    # -- load-balancer removal reservations -------------------------------------------
    def reserve_removal(self, group: str, holder: str, healthy: Sequence[str], keep: int,
                        max_out_share: float, ttl: float, force: bool = False) -> Reserved:
        """Reserve taking `holder` out of `group` (see `store_api.StateStore.reserve_removal`)."""
        now = self.clock()
        group = safe_key(group)
        with self._transaction() as db:
            db.execute("DELETE FROM reservations WHERE grp = ? AND expires <= ?", (group, now))
            out = {h for (h,) in db.execute("SELECT holder FROM reservations WHERE grp = ?", (group,))}
            verdict = judge(out, holder, healthy, keep, max_out_share, force)
            if verdict.granted:
                db.execute("INSERT OR REPLACE INTO reservations (grp, holder, expires) VALUES (?, ?, ?)",
                           (group, holder, now + ttl))
            return verdict

    def force_removals(self, removals: Sequence[tuple[str, str]], ttl: float) -> None:
        """Count each (group, holder) out of its group, never refused: one transaction."""
        if not removals:
            return
        now = self.clock()
        rows = [(safe_key(group), holder) for group, holder in removals]
        with self._transaction() as db:
            db.executemany("DELETE FROM reservations WHERE grp = ? AND expires <= ?",
                           [(group, now) for group in dict.fromkeys(g for g, _ in rows)])
            db.executemany("INSERT OR REPLACE INTO reservations (grp, holder, expires) VALUES (?, ?, ?)",
                           [(group, holder, now + ttl) for group, holder in rows])

    def release_removal(self, group: str, holder: str) -> None:
        self._run("DELETE FROM reservations WHERE grp = ? AND holder = ?", (safe_key(group), holder))

    def purge_shared(self) -> None:
        now = self.clock()
        for table in ("claims", "budget_takes", "plugin_state", "reservations"):
            self._run(f"DELETE FROM {table} WHERE expires <= ?", (now,))


def judge(out: set[str], holder: str, healthy: Sequence[str], keep: int, max_out_share: float,
          force: bool) -> Reserved:
    """The guard's rule, the same in every store (the Redis script is its transcription):
    granted when forced, when `holder` holds it already or is not healthy (taking it out
    costs no healthy capacity), or when at least `keep` healthy members stay in and at
    most `max_out_share` of the group (healthy members and those out) would be out."""
    members = set(healthy)
    remaining = len(members - out - {holder})
    if force or holder in out or holder not in members:
        return Reserved(True, remaining)
    total = len(members | out)
    if remaining < keep or len(out) + 1 > math.floor(max_out_share * total + 1e-9):
        return Reserved(False, remaining)
    return Reserved(True, remaining)
