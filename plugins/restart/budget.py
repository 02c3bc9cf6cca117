"""The restart plugin's budgets: restarts per instance per hour, all restarts per minute, and
the spot instances that had an interruption notice; saved as JSON in the plugin's state dir."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

INTERRUPTION_MEMORY_SECONDS = 24 * 3600  # a noticed spot instance stays off-limits this long
HOUR, MINUTE = 3600.0, 60.0


class RestartBudget:
    """Restart times per instance and interruption notices, thread-safe, saved as JSON.

    `path=None` (dry-run) keeps everything in memory. An unwritable state dir is logged
    once and then also memory-only: budgets still hold for this process's lifetime.
    """

    def __init__(self, path: Path | None, per_hour: int, per_minute: int, log, clock=time.time) -> None:
        self.path, self.per_hour, self.per_minute = path, per_hour, per_minute
        self._log, self._clock = log, clock
        self._lock = threading.Lock()
        self._restarts: dict[str, list[float]] = {}
        self._interrupted: dict[str, float] = {}
        self._load()

    def reserve(self, instance_id: str) -> tuple[str, float]:
        """("ok", 0) and count a restart; ("instance", 0) past the hourly budget; or
        ("global", seconds until a slot frees) past the per-minute cap."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            mine = self._restarts.get(instance_id, [])
            if len(mine) >= self.per_hour:
                return "instance", 0.0
            recent = sorted(t for times in self._restarts.values() for t in times if t > now - MINUTE)
            if len(recent) >= self.per_minute:
                return "global", recent[-self.per_minute] + MINUTE - now
            self._restarts.setdefault(instance_id, []).append(now)
            self._save()
            return "ok", 0.0

    def release(self, instance_id: str) -> None:
        """Undo the latest reservation: the restart did not happen (or was not ours)."""
        with self._lock:
            times = self._restarts.get(instance_id)
            if times:
                times.pop()
                self._save()

    def note_interruption(self, instance_id: str) -> None:
        with self._lock:
            self._interrupted[instance_id] = self._clock()
            self._save()

    def interrupted(self, instance_id: str) -> bool:
        with self._lock:
            seen = self._interrupted.get(instance_id)
            return seen is not None and self._clock() - seen < INTERRUPTION_MEMORY_SECONDS

    def _prune(self, now: float) -> None:
        self._restarts = {i: [t for t in ts if t > now - HOUR] for i, ts in self._restarts.items()}
        self._restarts = {i: ts for i, ts in self._restarts.items() if ts}
        self._interrupted = {i: t for i, t in self._interrupted.items()
                             if now - t < INTERRUPTION_MEMORY_SECONDS}

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            self._restarts = {str(i): [float(t) for t in ts] for i, ts in doc.get("restarts", {}).items()}
            self._interrupted = {str(i): float(t) for i, t in doc.get("interrupted", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            self._log.warning("restart: ignoring unreadable budget file %s: %s", self.path, exc)

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # private
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"restarts": self._restarts, "interrupted": self._interrupted}))
            os.replace(tmp, self.path)  # atomic: a crash leaves the old file or the new one
        except OSError as exc:
            self._log.warning("restart: cannot save budgets to %s (%s); keeping them in memory",
                              self.path, exc.strerror)
            self.path = None
