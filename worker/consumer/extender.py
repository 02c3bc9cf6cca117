"""The visibility extender: keeps every held message invisible while it is being handled
or awaits a plugin's future, and keeps the newest receipt handle. Its loop also looks,
now and then, for the crash journals of dead sibling workers (`crashes.py`).

Renewals run side by side on `RENEWERS` threads (each with its own MNS client), and
each starts early enough for the measured MNS round trip (`lead`): one slow call must
not make the others late. `capacity` is how many messages those threads can keep
hidden at that round trip: the receive loop never holds more.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Callable

from .held import Held
from ..queue.source import MnsError, MnsQueue
from ..text import one_line

log = logging.getLogger("ecs_worker.runner")

EXTEND_EVERY = 0.1  # seconds between sweeps for due messages
RECOVER_EVERY = 30.0  # seconds between looks for the journals of dead workers sharing state_dir
RENEWERS = 8  # renewal threads
FIRST_RTT = 0.05  # seconds: the round-trip estimate until one is measured
SAFETY = 2.0  # capacity keeps renewers at most half busy


class Extender:
    def __init__(self, source: MnsQueue, seconds: float, due: Callable[[float], list[Held]],
                 closing: threading.Event, recover: Callable[[], None]) -> None:
        self.source = source
        self.seconds = seconds  # each extension's visibility timeout
        self.queue_visibility = seconds  # the queue's own timeout (a fresh message's window)
        self._due = due  # held messages whose extend_at has come, at a monotonic time
        self._closing = closing
        self._recover = recover
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self.rtt = FIRST_RTT
        self._died: BaseException | None = None  # what ended a renewal thread

    def observe(self, seconds: float) -> None:
        """One MNS round trip measured: rises at once, falls slowly."""
        self.rtt = max(seconds, 0.8 * self.rtt + 0.2 * seconds)

    @property
    def lead(self) -> float:
        """How long before its deadline a renewal must start."""
        return 3 * self.rtt + 2 * EXTEND_EVERY

    def capacity(self) -> int:
        """Messages the renewers can keep hidden: each needs a renewal per half window."""
        window = min(self.seconds, self.queue_visibility) / 2
        return max(1, int(RENEWERS * window / (self.rtt * SAFETY)))

    def extend_at(self, now: float, remaining: float) -> float:
        """When a message with `remaining` seconds of invisibility is next renewed."""
        return now + max(0.0, min(remaining / 2, remaining - self.lead))

    def loop(self) -> None:
        renewers = [threading.Thread(target=self._renew_loop, name=f"renew-{i}", daemon=True)
                    for i in range(RENEWERS)]
        for t in renewers:
            t.start()
        next_recover = time.monotonic() + RECOVER_EVERY
        while not self._closing.wait(EXTEND_EVERY):
            now = time.monotonic()
            if now >= next_recover:  # a sibling worker on this host may have died
                self._recover()
                next_recover = now + RECOVER_EVERY
            for held in self._due(now):
                held.extend_at = math.inf  # queued: not due again until renewed
                self._work.put(held)
            if self._died is not None:  # this thread dies of it: the runner stops loudly
                raise RuntimeError(f"a renewal thread died: {one_line(self._died)}") from self._died

    def _renew_loop(self) -> None:
        try:
            self._renew_each()
        except BaseException as exc:  # noqa: B902 - SystemExit too: reported by `loop`
            self._died = exc

    def _renew_each(self) -> None:
        while not self._closing.is_set():
            try:
                held = self._work.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.extend(held)
            except Exception as exc:  # a bug must not end extending for every message
                log.error("extending message %s failed: %s", held.message.id, one_line(exc))
                held.extend_at = time.monotonic() + 1.0

    def extend(self, held: Held) -> None:
        with held.lock:
            if held.closing:
                return
            started = time.monotonic()
            try:
                held.handle = self.source.change_visibility(held.handle, self.seconds)
            except MnsError as exc:
                if exc.stale_handle:  # it became visible again: the next receive adopts it
                    log.warning("message %s: lost its invisibility (%s); it may be handled twice",
                                held.message.id, exc.code)
                    held.extend_at = math.inf
                else:
                    log.warning("%s; will retry", exc)
                    held.extend_at = time.monotonic() + min(1.0, max(0.0, held.deadline - time.monotonic()) / 4)
                return
            now = time.monotonic()
            self.observe(now - started)
            # The new timeout counts from when MNS took the call: half a round trip before now at worst.
            held.deadline = started + self.seconds
            held.extend_at = self.extend_at(now, held.deadline - now)
