"""The runner's internal threads: each runs guarded, a death is reported loudly, a dead one is found.

A loop that dies silently would leave a live process doing no work: a thread that dies marks
`/healthz` failed, stops the receive loop (so the watchdog pings stop too) and makes the worker
exit with code 1, so that the service manager restarts it (docs/reliability.md).
"""
from __future__ import annotations

import logging

from ..observability import health
from ..text import one_line

log = logging.getLogger("ecs_worker.runner")


class ThreadWatch:
    """Mixed into `Runner`, whose `fatal`, `_stopping`, `_room`, `_threads`, `_pool` and
    `dispatcher` it watches."""

    def _guarded(self, name: str, target):
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: B902 - a dead loop must never be silent
                self._died(name, exc)
        return run

    def _died(self, name: str, exc: BaseException) -> None:
        """An internal thread died: fail loudly so that the service manager restarts us."""
        if self.fatal is None:
            self.fatal = name
        health.thread_died(name)
        log.critical("internal thread %r died (%s); stopping with exit code 1 so that the service "
                     "manager restarts the worker", name, one_line(exc), exc_info=exc)
        self._stopping.set()
        self._room.wake()

    def _dead_thread(self) -> str | None:
        """The name of an internal thread that is no longer running although it should."""
        if self.fatal:
            return self.fatal
        for t in self._threads:
            if not t.is_alive() and not (t.name == "receive" and self._stopping.is_set()):
                return t.name
        if not self._pool.alive():
            return "handler"
        if not self.dispatcher.deadlines.alive():
            return "deadlines"
        return None
