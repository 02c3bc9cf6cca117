"""The receive loop's calls to MNS: how long each waits, the pause between them, and
abandoning the one under way when the worker stops.

- The first receive waits at most `FIRST_WAIT`: its success proves the receive permission,
  so readiness (`READY=1`, `/healthz` polled) follows it at once instead of a whole long
  poll on a quiet queue. Every later one long-polls `wait_seconds`.
- Between receives, `gather.py` decides a pause while messages trickle in.
- Stopping does not wait out a long poll: `idle()` abandons a receive parked in one.
  What that receive still brings (a message that arrived in the meantime) it releases
  itself at once (visibility 1 s), as the settler would have; only if the process is gone
  first does such a message wait for its visibility timeout, as after any crash.
"""
from __future__ import annotations

import logging
import threading

from .gather import Gather
from ..queue.source import MnsError, MnsQueue, Message

log = logging.getLogger("ecs_worker.runner")

FIRST_WAIT = 1  # seconds: the first receive's long poll


class Receiving:
    def __init__(self, source: MnsQueue, wait_seconds: int, gather_seconds: float,
                 stopping: threading.Event) -> None:
        self.source = source
        self.wait_seconds = wait_seconds
        self.gather = Gather(gather_seconds)
        self._stopping = stopping
        self._lock = threading.Lock()
        self._polling = False  # a receive call is under way
        self._abandoned = False  # stopping no longer waits for it
        self._received_once = False

    def receive(self, asked: int) -> list[Message]:
        """One receive of up to `asked` messages; raises `MnsError` as the source does."""
        wait = self.wait_seconds if self._received_once else min(FIRST_WAIT, self.wait_seconds)
        with self._lock:
            self._polling = True
        try:
            messages = self.source.receive(asked, wait, self._stopping)
        finally:
            with self._lock:
                self._polling = False
                abandoned = self._abandoned
        self._received_once = True
        if abandoned and messages:
            self._release(messages)
            return []
        return messages

    def pause(self, got: int, asked: int, now: float) -> None:
        """Wait (cut short by stopping) as `gather.py` decides after a receive."""
        seconds = self.gather.pause(got, asked, now)
        if seconds:
            self._stopping.wait(seconds)

    def idle(self, receiver_alive: bool) -> bool:
        """True when no receive result is on its way to the settler: the receiver has
        stopped, or sits in a receive call — which is then abandoned."""
        with self._lock:
            if not receiver_alive:
                return True
            self._abandoned = self._polling
            return self._polling

    def abandon(self) -> None:
        """Whatever receive is under way or still to come is no longer waited for."""
        with self._lock:
            self._abandoned = True

    def _release(self, messages: list[Message]) -> None:
        for m in messages:  # the settler is closed: release them here, best effort
            try:
                self.source.change_visibility(m.receipt_handle, 1)
            except MnsError as exc:
                log.warning("%s (message %s); it comes back after its visibility timeout", exc, m.id)
