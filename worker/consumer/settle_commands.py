"""The settle commands: what the settler (`settle.py`) is told to do with a held message —
carry out its result, drop a duplicate, release it unstarted, give up on it (attempts
exhausted), dead-letter a re-sent deferral it refuses, or let one wait on (back early, or
its plugins' states not here)."""
from __future__ import annotations

RESULT, DUPLICATE, RELEASE, EXHAUSTED = "result", "duplicate", "release", "exhausted"
WAIT = "wait"  # a re-sent deferral that arrived before it is due: wait on, run nothing
LATER = "later"  # not now, uncounted: its `later` (seconds, why) says when and why
REFUSED = "refused"  # a re-sent deferral not to be trusted or too old: dead-lettered (`refused`)
STATELESS = "stateless"  # a re-sent deferral whose plugins' states are not here: wait, run nothing
