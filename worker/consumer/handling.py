"""Handling one message on a handler thread: a crash suspect runs in a quarantine child
process (`quarantine.py`), forked while nothing else runs (`crashes.Gate`); any other
message's start and end are noted in the crash journal (`crashes.Journal`), and its outcome —
whenever and on whichever thread the dispatcher resolves it — goes to the settler.
Nothing here may leak a message: whatever raises becomes that message's failure."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

from ..observability import metrics
from . import quarantine
from .crashes import Gate, Journal
from ..plugin_host.dispatch import Dispatcher
from ..plugin_host.outcomes import FAILED, Result
from .held import RELEASE, RESULT, Held
from .settle import Settler
from ..text import one_line

log = logging.getLogger("ecs_worker.runner")


class Handling:
    def __init__(self, dispatcher: Dispatcher, settler: Settler, stopping: threading.Event) -> None:
        self.dispatcher = dispatcher
        self.settler = settler
        self._stopping = stopping
        self._gate = Gate()  # crash suspects run alone
        self.journal: Journal | None = None  # opened by `open`, before the first message

    def open(self, state_dir: str) -> None:
        self.journal = Journal(state_dir)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    def run(self, held: Held) -> None:
        """Start the message's plugins, or release it when stopping (another worker's)."""
        entered = attached = False
        try:
            if self._stopping.is_set() or not self._gate.enter(held.suspect, self._stopping):
                self.settler.put(held, RELEASE)  # received but not started: another worker's
                return
            entered = True
            if held.suspect:  # it may be what killed a worker: in a child of its own
                attached = True  # settled, and the gate left, by `_quarantined` itself
                self._quarantined(held)
                return
            assert self.journal is not None
            self.journal.started(held.key)
            future = self.dispatcher.start(held.event, held.resume)
            attached = True
            future.add_done_callback(lambda f: self._done(held, f))
        except BaseException as exc:  # noqa: B902 - a bug here must not leak the message or the slot
            log.error("handling message %s failed: %s", held.message.id, one_line(exc), exc_info=exc)
            if entered and not attached:
                self._ended(held)
            if not attached:
                self.settler.put(held, RESULT, Result(FAILED, held.event, error=one_line(exc)))

    def _quarantined(self, held: Held) -> None:
        """Fork with nothing else running (`Gate`), let the others go on at once, and wait
        on this handler thread for the child's result."""
        left = []

        def forked() -> None:
            left.append(True)
            self._gate.leave(True)
        try:
            result, held.crashed = quarantine.run(self.dispatcher, held.event, held.resume, forked,
                                                  self.journal.descriptors() if self.journal else ())
        except BaseException as exc:  # noqa: B902 - e.g. fork refused (no memory): a failure, not a crash
            result = Result(FAILED, held.event, error=f"quarantine: {one_line(exc)}")
        finally:
            if not left:
                self._gate.leave(True)
        for action in result.actions:  # the child's counters died with it
            metrics.count_action(action)
        self.settler.put(held, RESULT, result)

    def _done(self, held: Held, future: Future) -> None:
        """The outcome is in (on whichever thread resolved it): never raise from here."""
        try:
            result = _result(future, held)
        except BaseException as exc:  # noqa: B902
            result = Result(FAILED, held.event, error=one_line(exc))
        try:
            self._ended(held)
        finally:
            self.settler.put(held, RESULT, result)

    def _ended(self, held: Held) -> None:
        try:
            if self.journal is not None:
                self.journal.ended(held.key)
        except BaseException as exc:  # noqa: B902 - e.g. a full disk: the message still settles
            log.error("crash journal: %s", one_line(exc))
        finally:
            self._gate.leave(held.suspect)


def _result(future: Future, held: Held) -> Result:
    exc = future.exception()
    if exc is not None:
        return Result(FAILED, held.event, error=one_line(exc))
    return future.result()
