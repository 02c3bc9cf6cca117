"""The admit thread: decides on each received batch (`admission.py`) while the receive
thread is already in its next receive, so the batch's store step — a round trip to a shared
store, milliseconds away — no longer sits between two receives.

The receive thread holds a batch (`room.py`: held from receipt) and hands it over here;
it hands over the next one only once this one is decided, so the worker is never more
than one batch ahead of its room: the batch being decided is held, its messages are not
yet busy handlers. A decision runs the message on the pool or goes to the settler at
once; a batch that arrives while the worker is stopping is released (another worker's).
Whatever raises while deciding fails the one message it concerns (`admission.py`); a
bug past that kills this thread, which stops the worker loudly (`thread_watch.py`).
"""
from __future__ import annotations

import threading
from typing import Callable

from .admission import Admission
from .held import Held
from .room import Room
from .settle_commands import RELEASE, RESULT
from .settle import Settler

WAKE_EVERY = 0.2  # seconds between looks at `closing` while nothing comes


class Admitting:
    def __init__(self, admission: Admission, settler: Settler, room: Room,
                 submit: Callable[[list[Held]], None], stopping: threading.Event,
                 closing: threading.Event) -> None:
        self._admission = admission
        self._settler = settler
        self._room = room
        self._submit = submit  # the handler pool's
        self._stopping, self._closing = stopping, closing
        self._cond = threading.Condition()
        self._batch: list[Held] | None = None  # handed over, not yet decided

    def hand_over(self, batch: list[Held]) -> None:
        """(The receive thread.) Wait until the batch before is decided, then hand this one
        over; at `closing` (the drain gave up) it is left in flight: MNS redelivers it."""
        with self._cond:
            while self._batch is not None:
                if self._closing.is_set():
                    return
                self._cond.wait(WAKE_EVERY)
            self._batch = batch
            self._cond.notify_all()

    def loop(self) -> None:
        """Decide on each batch handed over, until `closing`."""
        while True:
            with self._cond:
                while self._batch is None:
                    if self._closing.is_set():
                        return
                    self._cond.wait(WAKE_EVERY)
                batch = self._batch
            self._decide(batch)
            with self._cond:
                self._batch = None
                self._cond.notify_all()

    def _decide(self, batch: list[Held]) -> None:
        if self._stopping.is_set():  # received while stopping: let another worker have them
            for held in batch:
                self._settler.put(held, RELEASE)
            return
        to_run = []
        for held, kind, result in self._admission.decide(batch):
            if kind == RESULT and result is None:
                to_run.append(held)
            else:
                self._settler.put(held, kind, result)
        self._room.started(len(to_run))
        self._submit(to_run)
