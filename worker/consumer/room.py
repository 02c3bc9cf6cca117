"""The worker's room for more messages: the held messages (by id), those not yet decided
on (`admitting.py`) and the busy handlers, under one condition the receive loop waits on.
There is room while fewer than `concurrency` handlers are busy, fewer messages are held
than `max_pending` — or than the renewals can keep hidden when MNS is slow
(`Extender.capacity`) — and fewer than `read_ahead` received messages wait for a decision.
A message is held, and undecided, from receipt; it counts as busy once it is handed to a
handler."""
from __future__ import annotations

import threading
from typing import Callable

from ..observability import metrics
from .held import Held, hold
from ..queue.source import Message


class Room:
    def __init__(self, concurrency: int, max_pending: int, capacity: Callable[[], int],
                 read_ahead: int) -> None:
        self.concurrency, self.max_pending, self.read_ahead = concurrency, max_pending, read_ahead
        self._capacity = capacity
        self._cond = threading.Condition()
        self._busy = 0  # handler tasks whose synchronous part has not finished
        self._undecided = 0  # held, not yet decided on (admitting.py)
        self.held: dict[str, Held] = {}

    def __len__(self) -> int:
        return len(self.held)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float, stopping: threading.Event) -> int:
        """Block (up to `timeout`) until there is room; how many more messages may be held."""
        with self._cond:
            if not self._has_room():
                self._cond.wait(timeout)
                metrics.loop_alive()
            if stopping.is_set() or self._busy >= self.concurrency or self._undecided >= self.read_ahead:
                return 0
            return max(0, self._most_held() - len(self.held))

    def _most_held(self) -> int:
        return min(self.max_pending, self._capacity())

    def _has_room(self) -> bool:  # with self._cond held
        return self._busy < self.concurrency and self._undecided < self.read_ahead \
            and len(self.held) < self._most_held()

    def _opened(self) -> None:  # with self._cond held
        # Only once there is room: waking the receiver per finished message, to find
        # the pool still full, costs a GIL hand-over each time.
        if self._has_room():
            self._cond.notify_all()

    def accept(self, messages: list[Message], queue_visibility: float,
               extend_at: Callable[[float, float], float]) -> list[Held]:
        """Hold a received batch (`held.hold`), undecided; returns the new messages."""
        with self._cond:
            fresh = hold(self.held, messages, queue_visibility, extend_at)
            self._undecided += len(fresh)
            metrics.INFLIGHT.set(len(self.held))
        return fresh

    def decided(self, count: int, to_run: int) -> None:
        """`count` messages decided on, `to_run` of them handed to handlers."""
        with self._cond:  # once per batch: every lock the handlers also take costs a hand-over
            self._undecided -= count
            self._busy += to_run
            self._opened()

    def handled(self) -> None:
        """A handler task's synchronous part is over."""
        with self._cond:
            self._busy -= 1
            self._opened()

    def due(self, now: float) -> list[Held]:
        """Held messages whose invisibility is due for an extension (the extender's)."""
        with self._cond:
            return [h for h in self.held.values() if h.extend_at <= now]

    def finish(self, *done: Held) -> None:
        """Settled: no longer held."""
        with self._cond:
            for held in done:
                if self.held.get(held.message.id) is held:
                    del self.held[held.message.id]
            metrics.INFLIGHT.set(len(self.held))
            self._opened()
