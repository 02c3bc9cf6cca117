"""The state store with the reads only tests need (one key at a time): the worker itself
reads a whole batch at once (`Store.take`)."""
from __future__ import annotations

import json
from typing import Mapping, Sequence

from ecs_worker.state.store import MAX_KEYS, Store, _resume_list, _rows, safe_key


class ReadableStore(Store):
    def is_settled(self, key: str) -> bool:
        rows = self._run("SELECT 1 FROM settled WHERE key = ? AND expires > ?", (safe_key(key), self.clock()))
        return bool(rows)

    def mark_settled(self, key: str) -> None:
        """Remember `key` as settled for the dedupe TTL; forget its attempts."""
        self.mark_settled_many([key])

    def settled_among(self, keys: Sequence[str]) -> set[str]:
        """The keys settled within the dedupe TTL: one read for a batch."""
        if not keys:
            return set()
        if len(keys) > MAX_KEYS:
            return {k for i in range(0, len(keys), MAX_KEYS)
                    for k in self.settled_among(keys[i:i + MAX_KEYS])}
        safe = {k: safe_key(k) for k in keys}
        unique = list(dict.fromkeys(safe.values()))
        rows = self._run(f"SELECT key FROM settled WHERE key IN {_rows(1, len(unique))} AND expires > ?",
                         (*unique, self.clock()))
        found = {k for (k,) in rows}
        return {k for k, s in safe.items() if s in found}

    def attempts(self, key: str) -> int:
        rows = self._run("SELECT attempts FROM attempts WHERE key = ?", (safe_key(key),))
        return rows[0][0] if rows else 0

    def suspect(self, key: str) -> bool:
        rows = self._run("SELECT suspect FROM attempts WHERE key = ?", (safe_key(key),))
        return bool(rows and rows[0][0])

    def resume(self, key: str) -> dict[str, float | None] | None:
        """The plugins to call again (plugin -> deferred_since), or None for all."""
        rows = self._run("SELECT resume FROM attempts WHERE key = ?", (safe_key(key),))
        return _resume_list(rows[0][0]) if rows else None

    def set_resume(self, key: str, plugins: Mapping[str, float | None]) -> None:
        self._run("INSERT INTO attempts (key, attempts, resume, updated) VALUES (?, 0, ?, ?) "
                  "ON CONFLICT(key) DO UPDATE SET resume = excluded.resume, updated = excluded.updated",
                  (safe_key(key), json.dumps(dict(plugins)), self.clock()))

