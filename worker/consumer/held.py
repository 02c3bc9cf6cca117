"""A received message while the worker holds it (`Held`): the in-flight record, and
`hold`, which registers a received batch. What the settler is told to do with one is in
`settle_commands.py`."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..events.wrapper import Deferred
from ..events.event import Event
from ..queue.source import Message

REPR_KEY_CHARS = 120  # the repr (log lines) shows at most this much of a key


@dataclass(eq=False)
class Held:
    """A received message until it is settled."""

    message: Message
    handle: str  # the newest receipt handle: change-visibility replaces it
    deadline: float  # monotonic time its invisibility ends
    extend_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: bool = False  # being settled: the extender must not touch it any more
    body: bytes | str | None = None  # the body out of its deferral wrapper (admission unwraps it once)
    event: Event | None = None
    key: str = ""  # the message key (keys.py)
    attempt: int = 0  # this attempt's number, should it fail
    resume: dict[str, float | None] | None = None
    suspect: bool = False  # running when a worker died: runs in quarantine (quarantine.py)
    crashed: bool = False  # its quarantine process died: it stays a suspect
    wrapped: Deferred | None = None  # a long deferral, re-sent with its key (deferred.py)
    later: tuple[float, str] = (0.0, "")  # LATER: come back in this many seconds, and why
    refused: tuple[str, str] | None = None  # (dead-letter reason, why): never run (trust.py)
    claimed: bool = False  # its key is claimed in a shared store by its message id (admission.py)

    def __repr__(self) -> str:  # log lines: never the body, a bounded key
        key = self.key if len(self.key) <= REPR_KEY_CHARS else self.key[:REPR_KEY_CHARS] + "..."
        return f"Held(message_id={self.message.id!r}, key={key!r}, attempt={self.attempt})"


def half_time(now: float, remaining: float) -> float:
    return now + remaining / 2


def hold(held: dict[str, Held], messages: list[Message], queue_visibility: float,
         extend_at: Callable[[float, float], float] = half_time) -> list[Held]:
    """Register a received batch in `held` (by message id); a message already held
    (redelivered because its invisibility lapsed) only gets its new receipt handle.
    Returns the new ones; `extend_at(now, remaining)` says when each is renewed. The
    caller holds the registry's lock."""
    now, wall = time.monotonic(), time.time()
    fresh = []
    for message in messages:
        # The queue's timeout bounds what we trust of NextVisibleTime (clock skew).
        remaining = float(queue_visibility)
        if message.next_visible_time_ms:
            remaining = min(remaining, message.next_visible_time_ms / 1000 - wall)
        remaining = max(remaining, 0.0)
        known = held.get(message.id)
        if known is not None:
            with known.lock:
                known.handle = message.receipt_handle
                known.deadline, known.extend_at = now + remaining, extend_at(now, remaining)
            continue
        new = Held(message, message.receipt_handle, now + remaining, extend_at(now, remaining))
        held[message.id] = new
        fresh.append(new)
    return fresh
