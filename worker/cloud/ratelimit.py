"""A client-side token bucket per API, so a wave of events does not throttle itself."""
from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    """`rate` calls per second on average, bursts up to `burst`.

    Reservation style: `acquire()` takes its token at once (the balance may go negative)
    and sleeps off the debt outside the lock, so waiting callers are served in arrival
    order and never spin.
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        # A small burst: the server's own limiter usually allows little more than its rate.
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 4)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting as long as needed; return the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
