"""Signals for the worker, as a daemon handles them. Handlers only record; the main
thread acts (`Runner.serve`), so no lock is ever taken inside a handler.

- SIGTERM, SIGINT: the first asks for a graceful stop; a second exits at once
  (unsettled messages reappear after their visibility timeout, so nothing is lost).
- SIGHUP: reload the config where it can be (`reload.py`); never a stop.
- SIGUSR1: log the status line (counts, in flight).
- STRAY (SIGUSR2, SIGALRM, ...): logged and otherwise ignored; their default action
  would end the process without a word.
"""
from __future__ import annotations

import logging
import os
import signal
from typing import Callable

log = logging.getLogger("ecs_worker.runner")

STOP = (signal.SIGTERM, signal.SIGINT)
RELOAD, STATUS = signal.SIGHUP, signal.SIGUSR1
# Signals whose default action ends the process and that nothing of ours sends.
STRAY = tuple(getattr(signal, name) for name in ("SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO",
                                                 "SIGPWR", "SIGTTIN", "SIGTTOU") if hasattr(signal, name))


class Signals:
    def __init__(self) -> None:
        self.count = 0  # stop requests
        self.last = signal.SIGTERM
        self._pending: list[int] = []  # other signals, for the main thread

    def install(self) -> None:
        def on_stop(signum, frame):
            self.count += 1
            self.last = signum

        def on_other(signum, frame):
            self._pending.append(signum)

        for sig in STOP:
            signal.signal(sig, on_stop)
        for sig in (RELOAD, STATUS, *STRAY):
            signal.signal(sig, on_other)

    def take(self) -> list[int]:
        """The non-stop signals received since the last call, oldest first."""
        taken = []
        while self._pending:
            taken.append(self._pending.pop(0))
        return taken

    def act(self, reload: Callable[[], None], status_line: Callable[[], str]) -> None:
        """Carry out the non-stop signals received since last time (main thread)."""
        for signum in self.take():
            if signum == RELOAD:
                reload()
            elif signum == STATUS:
                log.info("status (SIGUSR1): %s", status_line())
            else:
                log.warning("ignored signal %s: only SIGTERM/SIGINT stop the worker", name(signum))

    def exit_on_second(self, in_flight: int) -> None:
        if self.count > 1:  # impatient operator: go now; unsettled messages come back anyway
            log.warning("second signal: exiting without waiting for %d message(s)", in_flight)
            logging.shutdown()
            os._exit(128 + self.last)


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
