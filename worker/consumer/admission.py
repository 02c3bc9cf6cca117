"""Admission: what happens to each received message before any plugin runs.

Each message of a batch is parsed and keyed on its own, the batch is looked up in one
store read, and each gets a decision: run it, settle it at once (a duplicate, an invalid
body, attempts exhausted, a re-sent deferral that is forged or past its 30 days), wait on
(a re-sent deferral that came back early, or whose plugins' states this worker's store
lacks) or come back later without running: another copy of the same event runs now (the
store's claim, in this worker or another), or a shared store cannot be reached — then
only spot interruption notices run (removing a reclaimed instance needs no budget), the
rest return after a backoff, uncounted. What a re-sent deferral says is trusted only when
its MAC verifies (`trust.py`). Whatever raises here is the failure of the one message it
concerns, never its batch's.
"""
from __future__ import annotations

import logging
import time

from ..events.wrapper import unwrap
from ..backoff import backoff_delay
from ..events.event import PREEMPTIBLE_INTERRUPTION, InvalidEvent, parse_unwrapped
from ..events.keys import event_key, message_key
from ..plugin_host.outcomes import FAILED, Result, invalid
from .held import Held
from .settle_commands import DUPLICATE, EXHAUSTED, LATER, REFUSED, RESULT, STATELESS, WAIT
from ..trust.fleet_key import Signer
from ..state.store_api import StateStore
from ..state.store_types import Attempt
from ..text import one_line
from ..trust.judge import judge, missing_states, refusal, with_stored_states

log = logging.getLogger("ecs_worker.runner")

Decision = tuple[Held, str, "Result | None"]  # (held, kind, result); (RESULT, None): run it
BUSY_RETRY_SECONDS = 5  # a copy of a running event looks again this soon (then: a duplicate)
STORE_RETRY_CAP = 10  # seconds at most a message waits on an unreachable shared store, per return


def claim_seconds(config, store: StateStore) -> float:
    """How long a shared store's claim on a running message lasts: past the handling (the
    visibility timeout, extended while it runs; a plugin call), so a copy elsewhere waits,
    and not much longer, so a killed worker's claim lapses by itself. 0: no claims (SQLite)."""
    return 2 * max(config.mns.visibility_timeout, config.plugins.call_timeout) if store.shared else 0.0


class Admission:
    def __init__(self, store: StateStore, max_attempts: int, hold: float = 0.0,
                 signer: Signer | None = None) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self.hold = hold  # seconds a running message's claim lasts (0: no claims)
        self.signer = signer
        self._outage = 0  # consecutive batches a shared store could not answer

    def decide(self, batch: list[Held]) -> list[Decision]:
        """Parse and key each message, look the batch up in one store read, and decide
        what happens to each. Nothing is counted yet: an attempt counts when it fails
        (or crashes alone)."""
        decided: list[Decision] = []
        looked: list[tuple[Held, str | None]] = []  # (held, error if unreadable)
        for held in batch:
            try:
                looked.append((held, _read(held, self.signer)))
            except BaseException as exc:  # noqa: B902 - a bug here fails this message only
                decided.append(_broken(held, "reading it", exc))
        attempts = self._look_up([h for h, _ in looked])
        now = time.time()
        for (held, error), attempt in zip(looked, attempts):
            try:
                decided.append(self._decide(held, error, attempt, now))
            except BaseException as exc:  # noqa: B902
                decided.append(_broken(held, "deciding on it", exc))
        return decided

    def _look_up(self, batch: list[Held]) -> list[Attempt | None]:
        """One store step for the batch; if that fails, one per message (None: unknown)."""
        if not batch:
            return []
        # Each message's own id too: a message re-sent as a deferral is settled by id (settle.py).
        # Only the keys are claimed (owners name the first len(batch) keys).
        keys = [h.key for h in batch] + [message_key(h.message.id) for h in batch]
        owners = [h.message.id for h in batch]
        claim = {"owners": owners, "hold": self.hold} if self.hold else {}
        try:
            found = list(self.store.take(keys, self.max_attempts, **claim))
            self._outage = 0
            _note_claims(batch, found, self.hold)
            return [by_id if by_id.settled else by_key for by_key, by_id in zip(found, found[len(batch):])]
        except BaseException as exc:  # noqa: B902
            log.error("state store: %s; looking the %d message(s) up one by one", one_line(exc), len(batch))
        out: list[Attempt | None] = []
        for i, key in enumerate(keys[:len(batch)]):
            try:
                out.extend(self.store.take([key], self.max_attempts, **({"owners": [owners[i]], "hold": self.hold}
                                                                         if self.hold else {})))
                _note_claims(batch[i:i + 1], out[-1:], self.hold)
            except BaseException:  # noqa: B902 - degrade: MNS's DequeueCount stands in for ours
                out.append(None)
        if None in out:
            self._outage += 1
        return out

    def _decide(self, held: Held, error: str | None, attempt: Attempt | None, now: float) -> Decision:
        if attempt is not None and attempt.settled:  # a redelivered copy (a lost delete)
            return held, DUPLICATE, None
        if error is not None:
            return held, RESULT, invalid(error)
        if held.refused is None:
            held.refused = refusal(held.wrapped, now)
        if held.refused is not None:  # forged, unsigned with state, or past its 30 days
            return held, REFUSED, None
        wrapped = held.wrapped
        if attempt is not None and attempt.busy:
            held.later = (BUSY_RETRY_SECONDS, "another copy of this event is running")
            return held, LATER, None
        if attempt is None and self.store.shared and held.event.name != PREEMPTIBLE_INTERRUPTION:
            # A shared store's dedupe, claims and budgets are unknown now: running could act
            # twice across the fleet. Spot notices run (they need none of it).
            held.later = (max(1, round(backoff_delay(self._outage, 1, STORE_RETRY_CAP, "half"))),
                          "the shared state store is unreachable")
            return held, LATER, None
        if attempt is None:
            log.error("message %s: state store unavailable; counting attempts by DequeueCount",
                      held.message.id)
            made, exhausted = held.message.dequeue_count - 1, held.message.dequeue_count > self.max_attempts
            held.resume, held.suspect = wrapped.resume if wrapped else None, False
        else:
            made, exhausted = attempt.made, attempt.exhausted
            held.resume, held.suspect = attempt.resume, attempt.suspect
        if wrapped is not None:  # what travelled with it counts as much as what we know
            made = max(made, wrapped.attempts)
            exhausted = exhausted or made >= self.max_attempts
            held.resume = wrapped.resume if self.signer is not None else \
                with_stored_states(wrapped.resume, attempt.resume if attempt else None)
        held.attempt = made if exhausted else made + 1
        if exhausted:  # e.g. it crashed the worker every time
            return held, EXHAUSTED, None
        if wrapped is not None and wrapped.until - now > 1:  # re-sent early (a wait over 7 days)
            return held, WAIT, None
        if wrapped is not None and missing_states(held.resume):  # never run a sequence blind
            return held, STATELESS, None
        return held, RESULT, None


def _note_claims(batch: list[Held], found: list[Attempt], hold: float) -> None:
    """Which messages now hold their key's claim (unsettled, not another copy's): the
    settler ends each such claim however this worker's run of the message ends."""
    for held, by_key in zip(batch, found):
        held.claimed = bool(hold) and not by_key.settled and not by_key.busy


def _read(held: Held, signer: Signer | None) -> str | None:
    """Parse and key one message; returns why it is not an event, or None."""
    message = held.message
    held.key = message_key(message.id)
    held.body = message.body
    wrapped = unwrap(held.body)  # the one unwrap of this message: the rest read `held`
    if wrapped is not None:  # a long deferral, re-sent (deferred.py): its own key travels
        held.body = wrapped.body
        wrapped, held.refused = judge(wrapped, signer)  # None: an unsigned one, run as new
        if wrapped is not None:
            held.wrapped, held.key = wrapped, wrapped.key
    try:
        held.event = parse_unwrapped(held.body)
    except InvalidEvent as exc:
        return str(exc)
    except BaseException as exc:  # noqa: B902 - the parser choked on this body: it is poison
        return f"body cannot be parsed: {one_line(exc)}"
    if wrapped is None:
        held.key = event_key(held.event)
    if held.refused is not None:  # say which instance its event names, and key it as nothing else
        reason, why = held.refused
        held.refused = (reason, f"{why} (its event: {held.event.name} for {held.event.instance_id or 'no instance'})")
        held.key = message_key(message.id)
    return None


def _broken(held: Held, doing: str, exc: BaseException) -> Decision:
    """A bug met while taking one message on: that message fails (and, failing every
    time, is dead-lettered after `max_attempts` by its DequeueCount)."""
    log.error("message %s: %s failed: %s", held.message.id, doing, one_line(exc),
              exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
    held.attempt = max(held.attempt, held.message.dequeue_count)
    return held, RESULT, Result(FAILED, held.event, error=f"{doing} failed: {one_line(exc)}")
