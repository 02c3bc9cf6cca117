"""What a re-sent deferral (`deferred.py`) may make the worker do, judged before any plugin
runs. Anyone allowed to send to the queue can write a body shaped like one, so:

- signed with the fleet key: trusted whole (its key, attempts, resume list, saved states);
- a MAC that does not verify: forged — dead-lettered (`forged`), never run;
- no MAC while this worker has a key: written by an older version, or by anyone. One that
  carries plugins' saved states (say, a maintenance sequence with an instance out of its
  groups) is dead-lettered (`unsigned`) naming what those states name, so an operator can
  restore it; one without runs as the plain event inside it, checked against the cloud by
  its plugins like any new event (its key, attempts and wait are not believed);
- no key here: its saved states are not believed either, the store's are used (`{plugin:
  null}` in the wrapper names them; a shared store, `store_redis.py`, holds them for every
  worker using it); a plugin whose state is not in this worker's store (another host's
  SQLite store) makes the message wait (`STATE_WAIT_SECONDS`), never run.

A wrapper first deferred more than 30 days ago (`MAX_TOTAL_DEFERRAL`) is dead-lettered
(`deferred_too_long`) whatever it says.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from ..events.wrapper import FORGED, MAX_TOTAL_DEFERRAL, RESUME_STATE, SIGNED, Deferred, states_named, verdict
from .fleet_key import Signer

log = logging.getLogger("ecs_worker.runner")

STATE_WAIT_SECONDS = 60  # a wrapper whose states this worker lacks comes back after this
NAMES_CHARS = 1500  # how much of an unsigned wrapper's states its dead-letter reason quotes
REFUSALS = ("forged", "unsigned", "deferred_too_long")  # dead-letter reasons of this module


def judge(wrapped: Deferred, signer: Signer | None) -> tuple[Deferred | None, tuple[str, str] | None]:
    """(the wrapper to go on with, or None to run its body as a new event; a refusal:
    (dead-letter reason, why), or None)."""
    said = verdict(wrapped, signer)
    if said == SIGNED or signer is None:
        return wrapped, None
    if said == FORGED:
        return wrapped, ("forged", "re-sent deferral whose MAC does not verify with the fleet key "
                                   "([worker] signing_key_file): not written by this fleet; not acted on")
    states = states_named(wrapped.resume)
    if states:
        return wrapped, ("unsigned", "unsigned re-sent deferral (written before signing, or forged) carrying "
                                     f"the saved state of {', '.join(sorted(states))}: not acted on. Check that "
                                     f"what it names is back in service: {_quote(states)}")
    log.warning("an unsigned re-sent deferral (key %.120s): its event runs as a new one, "
                "checked against the cloud by its plugins", wrapped.key)
    return None, None


def refusal(wrapped: Deferred | None, now: float) -> tuple[str, str] | None:
    if wrapped is None or not wrapped.since or now - wrapped.since <= MAX_TOTAL_DEFERRAL:
        return None
    since = datetime.fromtimestamp(wrapped.since, timezone.utc).isoformat(timespec="seconds")
    return "deferred_too_long", f"deferred since {since}, over {MAX_TOTAL_DEFERRAL // 86400} days: given up"


def with_stored_states(resume: dict | None, stored: dict | None) -> dict | None:
    """`resume` with each named plugin's state taken from the store instead (null: not there)."""
    named = states_named(resume)
    if not named:
        return resume
    kept = states_named(stored)
    return {**resume, RESUME_STATE: {name: kept.get(name) for name in named}}


def stateless_reason(key: str, resume: dict | None) -> str:
    return (f"key {key:.120}: the saved state of {', '.join(missing_states(resume))} is not in this worker's "
            "store (no [worker] signing_key_file, so it does not travel in the message): not run; "
            f"back in {STATE_WAIT_SECONDS}s")


def missing_states(resume: dict | None) -> list[str]:
    """Plugins whose saved state the resume mapping names but does not hold."""
    return sorted(name for name, state in states_named(resume).items() if state is None)


def _quote(states: dict) -> str:
    text = json.dumps(states, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text if len(text) <= NAMES_CHARS else text[:NAMES_CHARS] + "..."
