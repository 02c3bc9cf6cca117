"""The handler pool: a fixed set of threads that run the synchronous part of dispatch."""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable

log = logging.getLogger("ecs_worker.runner")


class Handlers:
    """`count` threads running `handle(held)`, woken only when no awake one is free.

    Quick dispatches are then run by one or two threads in turn instead of waking all
    of them: every hand-over of the GIL between threads (worse, between cores) costs
    more than a quick event's whole dispatch. Slow ones still spread: a thread that takes
    work while more is waiting and nobody else is free wakes another first.
    """

    def __init__(self, count: int, handle: Callable[[Any], None],
                 on_death: Callable[[str, BaseException], None] | None = None) -> None:
        self._handle = handle
        self._on_death = on_death
        self._lock = threading.Lock()
        self._work: deque[Any] = deque()
        self._asleep: list[threading.Lock] = []  # one held lock per sleeping thread
        self._free = 0  # awake and about to look for work
        self._closed = False
        self._threads = [threading.Thread(target=self._guarded, name=f"handler-{i}", daemon=True)
                         for i in range(count)]

    def start(self) -> None:
        for t in self._threads:
            with self._lock:
                self._free += 1
            t.start()

    def submit(self, batch: list[Any]) -> None:
        with self._lock:
            self._work.extend(batch)
            if batch and not self._free:
                self._wake()

    def shutdown(self) -> None:
        """Let each thread end once the work queued before this is done."""
        with self._lock:
            self._closed = True
            while self._asleep:
                self._wake()

    def alive(self) -> bool:
        """Every thread is running (or the pool was shut down)."""
        return self._closed or all(t.is_alive() for t in self._threads if t.ident is not None)

    def _wake(self) -> None:  # with self._lock held
        if self._asleep:
            self._free += 1
            self._asleep.pop().release()

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: B902 - a bug in the loop itself: tell the owner
            if self._on_death is None:
                raise
            self._on_death(threading.current_thread().name, exc)

    def _run(self) -> None:
        gate = threading.Lock()
        gate.acquire()
        while True:
            with self._lock:
                self._free -= 1
                held = self._work.popleft() if self._work else None
                if held is not None and self._work and not self._free:
                    self._wake()
                elif held is None and not self._closed:
                    self._asleep.append(gate)
            if held is None:
                if self._closed:
                    return
                gate.acquire()  # until `_wake` releases it
                continue
            try:
                self._handle(held)
            except BaseException:  # noqa: B902 - e.g. a plugin's SystemExit: the handler must live on
                log.exception("handler failed on %r", held)  # Held's repr never prints the body
            with self._lock:
                self._free += 1
