"""Long deferrals travel in the queue, not in the worker's hands.

MNS throttles a consumer that keeps received messages undeleted for more than 30
minutes or holds more than 5,000 of them ("abnormal consumption", MNS flow control), and
a message can hide at most 43,200 s. So a deferral longer than `[worker]
resend_deferrals_after` (600 s by default) re-sends the message with `DelaySeconds`
(at most 604,800 s, 7 days, the documented maximum of SendMessage) and deletes the
original. The re-sent body wraps the original:

    {"ecs_worker_deferred": {"key": ..., "resume": {...}, "attempts": n, "since": t,
                             "until": t2},
     "body": "<the original body>"}

- `key`: the original message key (`keys.py`): dedupe and attempts stay the same;
- `resume`: the plugins to call again, each with when it first deferred (or null);
- `attempts`: attempts made so far, so the count survives a move to another worker;
- `since`: when the message was first deferred (Unix time);
- `until`: when it is due (Unix time). A wait longer than 7 days arrives early and is
  re-sent again for the rest; never later than `since` + 30 days (`MAX_TOTAL_DEFERRAL`):
  a wrapper past that is dead-lettered (`deferred_too_long`);
- `mac`: HMAC-SHA256 (`signing.py`) over the canonical encoding of the other fields and
  the body, with the fleet key. Only a wrapper whose MAC verifies is trusted
  (`verdict`); without a key the plugins' saved states do not travel in it at all —
  `resume["~state"]` names the plugins whose state the store keeps (`{plugin: null}`).

`parse_event` unwraps it (so `replay` and dead-letter records show the original event),
and any worker continues it. A wrapper that would not fit the queue's maximum message
size falls back to holding the message (up to 43,200 s at a time).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..trust.fleet_key import Signer

# Within a resume mapping ({plugin: deferred_since}), the key holding each plugin's saved
# state ({plugin: state}); it travels wherever the resume mapping does (store, re-sent message).
RESUME_STATE = "~state"

MARK = "ecs_worker_deferred"
MAX_DELAY_SECONDS = 604800  # SendMessage DelaySeconds: 0..604800
MAX_TOTAL_DEFERRAL = 30 * 86400  # from the first deferral; then dead-lettered
SIGNED, UNSIGNED, FORGED = "signed", "unsigned", "forged"  # what `verdict` says of a wrapper
_PREFIX = b'{"' + MARK.encode() + b'"'


@dataclass(frozen=True)
class Deferred:
    key: str
    body: bytes  # the original body
    resume: dict[str, float | None] | None = None
    attempts: int = 0
    since: float = 0.0
    until: float = 0.0
    mac: str | None = None
    signed: dict | None = field(default=None, repr=False, compare=False)  # what the MAC covers

    def remaining(self, now: float | None = None) -> float:
        return self.until - (time.time() if now is None else now)


@dataclass(frozen=True)
class Resend:
    """What the settler sends: the wrapper text and its delay."""

    body: str
    delay: int = field(default=0)


def wrap(body: bytes, key: str, resume: dict[str, float | None] | None, attempts: int,
         since: float, until: float, now: float | None = None, signer: Signer | None = None) -> Resend:
    """The re-sent copy. Signed with `signer`; without one the plugins' states stay out of
    it (the store keeps them) and only their names travel."""
    now = time.time() if now is None else now
    until = min(until, since + MAX_TOTAL_DEFERRAL) if since else until
    if signer is None and resume and isinstance(resume.get(RESUME_STATE), dict):
        resume = {**resume, RESUME_STATE: {name: None for name in resume[RESUME_STATE]}}
    meta = {"key": key, "resume": resume, "attempts": attempts, "since": since, "until": until}
    text = body.decode("utf-8", "replace")
    if signer is not None:
        meta["mac"] = signer.sign(_covered(meta, text))
    doc = {MARK: meta, "body": text}
    delay = max(0, min(MAX_DELAY_SECONDS, math.ceil(until - now)))
    return Resend(json.dumps(doc, ensure_ascii=True, separators=(",", ":")), delay)


def unwrap(body: bytes | str) -> Deferred | None:
    """The wrapper's contents, or None when `body` is not a well-formed wrapper."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if not isinstance(body, (bytes, bytearray)) or not bytes(body).lstrip().startswith(_PREFIX):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    meta = doc.get(MARK) if isinstance(doc, dict) else None
    inner = doc.get("body") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(inner, str):
        return None
    key, resume, attempts = meta.get("key"), meta.get("resume"), meta.get("attempts", 0)
    since, until = meta.get("since", 0), meta.get("until", 0)
    if (not isinstance(key, str) or not key or not _is_resume(resume)
            or not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0
            or not _is_time(since) or not _is_time(until)):
        return None
    try:
        raw = inner.encode("utf-8")
    except UnicodeEncodeError:
        return None
    mac = meta.get("mac")
    return Deferred(key, raw, resume, attempts, float(since), float(until),
                    mac if isinstance(mac, str) else None, _covered(meta, inner))


def verdict(wrapped: Deferred, signer: Signer | None) -> str:
    """SIGNED: written by a worker holding the fleet key; FORGED: a MAC that does not
    verify; UNSIGNED: no MAC (an older version, or anyone) or no key here to check it."""
    if signer is None or wrapped.mac is None:
        return UNSIGNED
    return SIGNED if signer.verify(wrapped.signed, wrapped.mac) else FORGED


def states_named(resume: dict | None) -> dict:
    """The plugins' saved states a resume mapping carries (`{plugin: state or None}`)."""
    states = (resume or {}).get(RESUME_STATE)
    return states if isinstance(states, dict) else {}


def _covered(meta: dict, body: str) -> dict:
    return {"meta": {k: v for k, v in meta.items() if k != "mac"}, "body": body}


def _is_resume(value) -> bool:
    """{plugin: deferred_since or None}, plus the plugins' saved states under RESUME_STATE."""
    return value is None or (isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or _is_time(v) or (k == RESUME_STATE and isinstance(v, dict)))
        for k, v in value.items()))


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
