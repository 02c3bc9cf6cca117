"""Before the worker receives: calls that must succeed (the queues' attributes) are
retried while MNS is unreachable, and given up on a permanent error or a signal."""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from ..observability.notify import SystemdNotifier
from ..queue.source import MnsError, fault_delay

log = logging.getLogger("ecs_worker.runner")
T = TypeVar("T")


def until_ok(call: Callable[[], T], notifier: SystemdNotifier, stopped: Callable[[], bool]) -> T:
    """Call until it succeeds: transient MNS errors back off (the watchdog still fed),
    permanent ones raise; `stopped()` turning true raises a non-permanent `MnsError`."""
    failures = 0
    while True:
        try:
            return call()
        except MnsError as exc:
            if exc.permanent:
                raise
            failures += 1
            delay = fault_delay(failures)
            log.warning("%s; retrying in %.1fs", exc, delay)
            notifier.watchdog()
            end = time.monotonic() + delay
            while time.monotonic() < end:
                if stopped():
                    raise MnsError("stopped before the queue was reachable") from None
                time.sleep(0.1)
