"""Deadlines: one thread that runs a callback when its deadline passes (a heap of timers,
cheap for thousands), for the dispatcher's per-call timeouts."""
from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Callable

log = logging.getLogger("ecs_worker.dispatch")


class Deadlines:
    """One thread that runs a callback when its deadline passes (cheap for thousands)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, callback: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + seconds, self._seq, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except BaseException:  # pragma: no cover - callbacks resolve results; never kill the thread
                log.exception("deadline callback failed")

    def alive(self) -> bool:
        """False once its thread has died (it starts with the first deadline)."""
        return self._thread is None or self._thread.is_alive()
