"""Retry with exponential backoff and full jitter (`backoff.py`): a wave of clients
throttled together comes back spread out, not in lockstep. A failure `at_once` says is
momentary is first tried again without a sleep: the caller's rate limit paces those tries.
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
    """Call `attempt()`; on a retryable exception sleep and try again, `max_retries` times.
    A failure `at_once(exc)` says is momentary is first tried again without a sleep, up to
    `max_retries` times of its own, and only then backs off like any other."""
    quick = slow = 0
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not retryable(exc):
                raise
            if at_once(exc) and quick < max_retries:
                quick, delay = quick + 1, 0.0
            elif slow < max_retries:
                slow, delay = slow + 1, backoff_delay(slow, base, cap, "full")
            else:
                raise
            if on_retry is not None:
                on_retry(exc, quick + slow, delay)
            if delay:
                sleep(delay)
