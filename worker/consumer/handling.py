"""Handling one message on a handler thread: a crash suspect runs alone (`crashes.Gate`),
its start and end are noted in the crash journal (`crashes.Journal`), and its outcome —
whenever and on whichever thread the dispatcher resolves it — goes to the settler.
Nothing here may leak a message: whatever raises becomes that message's failure."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

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
