"""Gathering: how long the receive loop pauses before its next receive, so that each
receive (and each batch delete after it) carries more messages.

MNS bills per request, and a long poll returns as soon as one message is there: at a
steady trickle of single sends, every receive would carry one message and every delete
one receipt. So after a receive that brought some messages but fewer than it asked for,
the loop waits for the rest of a batch to arrive at the rate they have been arriving —
never longer than `[mns] gather_seconds`, and not at all when not even one more message
is expected within that time (a slow trickle: waiting would add lag and save nothing). A
full batch (a backlog) or an empty poll pauses nothing, and the pause comes *after* the
messages were handed on, so a lone event after a quiet spell is handled at once.
"""
from __future__ import annotations

SMOOTHING = 0.5  # weight of the newest receive in the arrival-rate estimate


class Gather:
    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self._last: float | None = None  # when the previous receive returned
        self._rate = 0.0  # messages per second, smoothed over recent receives

    def pause(self, got: int, asked: int, now: float) -> float:
        """Seconds to wait before the next receive, after one that returned `got` of `asked`."""
        since = now - self._last if self._last is not None else None
        self._last = now
        if got <= 0 or got >= asked or self.max_seconds <= 0:
            self._rate = 0.0 if got <= 0 else self._rate
            return 0.0
        if since and since > 0:
            seen = got / since
            self._rate = seen if not self._rate else SMOOTHING * seen + (1 - SMOOTHING) * self._rate
        if self._rate * self.max_seconds < 1:  # not even one more expected: no use waiting
            return 0.0
        return min(self.max_seconds, (asked - got) / self._rate)

    @property
    def rate(self) -> float:
        """The arrival rate last estimated (0 after an empty poll)."""
        return self._rate
