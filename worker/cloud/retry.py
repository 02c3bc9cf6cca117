"""Retry with exponential backoff and full jitter (`backoff.py`): a wave of clients
throttled together comes back spread out, not in lockstep. A failure `at_once` says is
momentary is tried again without a sleep: the caller's rate limit paces that try.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from ..backoff import backoff_delay

T = TypeVar("T")


def call_with_retry(attempt: Callable[[], T], *, retryable: Callable[[Exception], bool],
                    max_retries: int, base: float = 0.2, cap: float = 10.0,
                    sleep: Callable[[float], None] = time.sleep,
                    on_retry: Callable[[Exception, int, float], None] | None = None,
                    at_once: Callable[[Exception], bool] = lambda exc: False) -> T:
    """Call `attempt()`; on a retryable exception sleep and try again, `max_retries` times
    (no sleep when `at_once(exc)`; every try still counts)."""
    for n in range(max_retries + 1):
        try:
            return attempt()
        except Exception as exc:
            if n >= max_retries or not retryable(exc):
                raise
            delay = 0.0 if at_once(exc) else backoff_delay(n, base, cap, "full")
            if on_retry is not None:
                on_retry(exc, n + 1, delay)
            if delay:
                sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
