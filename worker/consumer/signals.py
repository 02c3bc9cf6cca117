"""SIGTERM/SIGINT for the worker: the handler only counts; the main thread acts. The
first signal asks for a graceful stop; a second one exits at once (unsettled messages
reappear after their visibility timeout, so nothing is lost)."""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("ecs_worker.runner")


class Signals:
    def __init__(self) -> None:
        self.count = 0
        self.last = signal.SIGTERM

    def install(self) -> None:
        def on_signal(signum, frame):  # only flags: the main thread acts on them
            self.count += 1
            self.last = signum

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def exit_on_second(self, in_flight: int) -> None:
        if self.count > 1:  # impatient operator: go now; unsettled messages come back anyway
            log.warning("second signal: exiting without waiting for %d message(s)", in_flight)
            logging.shutdown()
            os._exit(128 + self.last)
