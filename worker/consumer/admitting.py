"""Admitting received messages: with a shared store, on the admit thread, which decides
on them (`admission.py`) while the receive thread is already in its next receive, so the
store step — a round trip to the server, milliseconds away — no longer sits between two
receives. With the local store (SQLite) the receive thread decides itself: its step, a
local transaction, costs less than waking another thread (which lengthens the lag).

The receive thread holds each batch it receives (`room.py`: held and undecided from
receipt) and hands it over here. The admit thread decides on every message handed over
since its last store step in one step: when deciding falls behind receiving, the batches
that waited meanwhile share one round trip. How far the receive thread may run ahead is the
room's `read_ahead` (`READ_AHEAD_BATCHES` batches undecided: one being decided, the rest
waiting). A decision runs the message on the pool or goes to the settler at once; what
arrives while the worker is stopping is released (another worker's). Whatever raises
while deciding fails the one message it concerns (`admission.py`); a bug past that kills
this thread, which stops the worker loudly (`thread_watch.py`).
"""
from __future__ import annotations

import threading
from typing import Callable

from .admission import Admission
from .held import Held
from .room import Room
from .settle_commands import RELEASE, RESULT
from .settle import Settler

READ_AHEAD_BATCHES = 3  # received batches not yet decided on before the receive thread waits


class Admitting:
    def __init__(self, admission: Admission, settler: Settler, room: Room,
                 submit: Callable[[list[Held]], None], stopping: threading.Event) -> None:
        self.threaded = admission.store.shared  # `loop` runs on a thread of its own
        self._admission = admission
        self._settler = settler
        self._room = room
        self._submit = submit  # the handler pool's
        self._stopping = stopping
        self._cond = threading.Condition()
        self._waiting: list[Held] = []  # handed over, not yet taken to be decided on
        self._closed = False

    def hand_over(self, batch: list[Held]) -> None:
        """(The receive thread.) Decide on these: on the admit thread as soon as it is
        free, or here and now with the local store."""
        if not self.threaded:
            self._decide(batch)
            return
        with self._cond:
            self._waiting.extend(batch)
            self._cond.notify()

    def close(self) -> None:
        """The drain is over: `loop` returns. Anything still waiting (the drain gave up on
        it) is left undecided — unclaimed — in flight, and MNS redelivers it."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def loop(self) -> None:
        """Decide on what is handed over, everything waiting at once, until `close`."""
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch, self._waiting = self._waiting, []
            self._decide(batch)

    def _decide(self, batch: list[Held]) -> None:
        to_run = []
        if self._stopping.is_set():  # received while stopping: let another worker have them
            for held in batch:
                self._settler.put(held, RELEASE)
        else:
            for held, kind, result in self._admission.decide(batch):
                if kind == RESULT and result is None:
                    to_run.append(held)
                else:
                    self._settler.put(held, kind, result)
        self._room.decided(len(batch), len(to_run))
        self._submit(to_run)
