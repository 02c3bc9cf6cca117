"""The visibility extender: keeps every held message invisible while it is being handled
or awaits a plugin's future, by changing its visibility at half-time, and keeps the
newest receipt handle. Its loop also looks, now and then, for the crash journals of
dead sibling workers (`crashes.py`)."""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from .held import Held
from ..queue.source import MnsError, MnsQueue
from ..text import one_line

log = logging.getLogger("ecs_worker.runner")

EXTEND_EVERY = 0.5  # seconds between sweeps
RECOVER_EVERY = 30.0  # seconds between looks for the journals of dead workers sharing state_dir


class Extender:
    def __init__(self, source: MnsQueue, seconds: float, due: Callable[[float], list[Held]],
                 closing: threading.Event, recover: Callable[[], None]) -> None:
        self.source = source
        self.seconds = seconds  # each extension's visibility timeout
        self._due = due  # held messages whose extend_at has come, at a monotonic time
        self._closing = closing
        self._recover = recover

    def loop(self) -> None:
        next_recover = time.monotonic() + RECOVER_EVERY
        while not self._closing.wait(EXTEND_EVERY):
            now = time.monotonic()
            if now >= next_recover:  # a sibling worker on this host may have died
                self._recover()
                next_recover = now + RECOVER_EVERY
            for held in self._due(now):
                if self._closing.is_set():
                    return
                try:
                    self.extend(held)
                except Exception as exc:  # a bug must not end extending for every message
                    log.error("extending message %s failed: %s", held.message.id, one_line(exc))

    def extend(self, held: Held) -> None:
        with held.lock:
            if held.closing:
                return
            try:
                held.handle = self.source.change_visibility(held.handle, self.seconds)
            except MnsError as exc:
                if exc.stale_handle:  # it became visible again: the next receive adopts it
                    log.warning("message %s: lost its invisibility (%s); it may be handled twice",
                                held.message.id, exc.code)
                    held.extend_at = math.inf
                else:
                    log.warning("%s; will retry", exc)
                    held.extend_at = time.monotonic() + 1.0
                return
            now = time.monotonic()
            held.deadline, held.extend_at = now + self.seconds, now + self.seconds / 2
