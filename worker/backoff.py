"""The one backoff formula: exponential growth from `base`, capped at `cap`, jittered.

`jitter` picks how the capped delay d is spread, each for a reason:

- "full": uniform in [0, d] — a wave of clients throttled together comes back spread out,
  not in lockstep (AWS architecture blog, "Exponential Backoff and Jitter"); cloud calls;
- "half": uniform in [d/2, d] — never much shorter than asked; failed events, MNS faults;
- "up": uniform in [d, d * 1.25] — never shorter than d, so a cap stays a floor on the
  interval (an idle receiver past the long-poll limit costs at most one call per wait).
"""
from __future__ import annotations

import random

JITTERS = ("full", "half", "up")


def backoff_delay(attempt: int, base: float, cap: float, jitter: str = "full",
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before try number `attempt + 1` (`attempt` 0 is the first retry)."""
    if jitter not in JITTERS:
        raise ValueError(f"jitter must be one of {JITTERS}, not {jitter!r}")
    r = (rng or random).random()
    delay = min(cap, base * 2 ** min(max(attempt, 0), 32))
    if jitter == "full":
        return delay * r
    if jitter == "half":
        return delay / 2 + delay / 2 * r
    return delay * (1.0 + 0.25 * r)
