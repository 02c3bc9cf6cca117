"""Settling: carrying out, in MNS, what a message's outcome means — the one meaning of "settle"
in this code base (`on_settled` observers hear of it afterwards; the store remembers settled
keys so that a redelivered copy is dropped).

handled / ignored -> remembered as settled, deleted (in batches of up to 16);
deferred          -> hidden for the requested delay, not an attempt; longer than `resend_deferrals_after`:
                     re-sent with DelaySeconds, original deleted (`deferred.py`), so no worker holds it;
failed            -> an attempt counted; hidden for a backoff growing with the attempts, or past
                     `max_attempts` dead-lettered;
invalid / refused -> dead-lettered at once (refused: a re-sent deferral not trusted, `trust.py`);
stateless / later -> hidden `STATE_WAIT_SECONDS` (`trust.py`) / as admission says; nothing run.
A shared store's claim on a message (`admission.py`) ends with this worker's run of it: in
the store step of its outcome (settled, failed, deferred), or — released, put off, kept,
a duplicate — by `unclaim` before MNS may hand it out again; only its owner ends it.
A re-sent message is remembered as settled by its MNS message id: back after a lost
delete, it is deleted, not re-sent again.
Dead-lettering (`dead_lettering.py`) writes `state_dir/dead-letter.jsonl` once per message,
then sends to the dead-letter queue (when configured), then the message is deleted; a
transient failure keeps it (it comes back). Every outcome reaches the `on_settled` observers;
nothing they raise (`SystemExit` included) stops this thread.
"""
from __future__ import annotations

import logging
import math
import queue as queues
import threading
import time
from typing import Any, Callable

from ..observability import metrics
from ..backoff import backoff_delay
from ..config import Config
from ..text import one_line
from ..plugin_host.outcomes import DEFERRED, FAILED, HANDLED, IGNORED, INVALID, Result
from ..events.event import Event
from .dead_lettering import dead_letter
from .held import Held
from .settle_commands import DUPLICATE, EXHAUSTED, LATER, REFUSED, RELEASE, STATELESS, WAIT
from ..events.keys import message_key
from .deletes import Deletes
from .resend import must_resend, resend
from ..trust.judge import STATE_WAIT_SECONDS, stateless_reason
from ..queue.source import MAX_BATCH, MAX_MESSAGE_BYTES, MnsError, MnsQueue
from ..state.store import Store

log = logging.getLogger("ecs_worker.settle")

DELETE_LINGER = 0.02  # seconds a partial delete batch waits for company
SETTLE_TICK = 0.002  # seconds between looks for more outcomes while a delete batch fills
MAX_VISIBILITY = 43200  # ChangeMessageVisibility's maximum: the longest a message can hide


def retry_backoff(attempt: int, base: float, cap: float, rng=None) -> int:
    """Whole seconds before a failed event returns: doubling per attempt, capped, half
    jittered, within what ChangeMessageVisibility accepts."""
    return max(1, min(MAX_VISIBILITY, round(backoff_delay(attempt - 1, base, cap, "half", rng))))


class Settler:
    """Owns the settle thread's work; `finish(*helds)` tells the runner messages are done;
    `on_settled(event, result)` tells the plugins' observers (the dispatcher's, handed in by
    the loop: settle does not reach up into the plugin host); `signer` signs re-sent
    deferrals (None: saved states stay in the store)."""

    def __init__(self, config: Config, source: MnsQueue, store: Store, signer: Any,
                 on_settled: Callable[[Event | None, Result], None],
                 finish: Callable[..., None], dead_letters: MnsQueue | None = None) -> None:
        self.config = config
        self.source = source
        self.store = store
        self.signer = signer
        self._on_settled = on_settled
        self.dead_letters = dead_letters
        self.max_attempts = config.worker.max_attempts
        self.resend_after = getattr(config.worker, "resend_deferrals_after", 600.0)
        self.source_max_size = MAX_MESSAGE_BYTES  # the runner reads both queues' own at start
        self.dead_letter_max_size = MAX_MESSAGE_BYTES
        self._finish = finish
        self.deletes = Deletes(source, finish)  # its `loop` is the settle-deletes thread
        self.counts = {"handled": 0, "failed": 0, "deferred": 0, "invalid": 0, "ignored": 0,
                       "duplicate": 0, "dead-lettered": 0}
        self._outcomes: queues.SimpleQueue = queues.SimpleQueue()  # (Held, kind, Result | None)
        self._closing = threading.Event()
        self._unmarked: list[str] = []  # keys settled, not yet remembered in the store

    def put(self, held: Held, kind: str, result: Result | None = None) -> None:
        self._outcomes.put((held, kind, result))

    def close(self) -> None:
        """Settle what is queued, then let `loop` return."""
        self._closing.set()

    def loop(self) -> None:
        """Settle outcomes until `closing` is set and nothing is left to settle; then the
        settle-deletes thread ends too, once it has deleted what it was handed.

        While deletes are pending it looks every `SETTLE_TICK` instead of blocking on the
        queue, so outcomes are taken in bursts, and the settled keys of each delete request
        (up to 16; a partial one waits at most `DELETE_LINGER`) are remembered in one store
        step just before it: one round trip to a shared store per request, not one per event.
        """
        try:
            self._loop()
        finally:
            self.deletes.close()

    def _loop(self) -> None:
        deletes: list[tuple[Held, str]] = []
        flush_at = 0.0
        while True:
            try:
                item = self._outcomes.get_nowait() if deletes else self._outcomes.get(timeout=0.2)
            except queues.Empty:
                if deletes and time.monotonic() < flush_at and not self._closing.is_set():
                    time.sleep(SETTLE_TICK)
                    continue
                self._flush_deletes(deletes)
                if self._closing.is_set():
                    return
                continue
            pending = len(deletes)
            try:
                self._settle(*item, deletes=deletes)
            except BaseException as exc:  # noqa: B902 - one message never stops settling for all
                log.error("settling message %s failed: %s; it comes back after its visibility timeout",
                          item[0].message.id, one_line(exc), exc_info=exc)
                self._unclaim(item[0])
                self._finish(item[0])
            if not pending and deletes:  # a partial batch waits at most DELETE_LINGER
                flush_at = time.monotonic() + DELETE_LINGER
            if len(deletes) >= MAX_BATCH:
                self._flush_deletes(deletes)

    def _settle(self, held: Held, kind: str, result: Result | None, deletes: list) -> None:
        with held.lock:
            held.closing = True
            handle = held.handle
        event = held.event
        if kind == RELEASE:  # never started: not an attempt
            self._set_visibility(held, handle, 1)  # MNS accepts 1..43200: 0 is refused
            return
        if kind == DUPLICATE:
            log.info("event %s already settled: deleting the redelivered copy", held.key,
                     extra={"event_id": held.key, "outcome": "duplicate", "message_id": held.message.id})
            self._count(event, "duplicate")
            self._unclaim(held)  # e.g. a re-sent deferral's original: its copy runs now
            deletes.append((held, handle))
            return
        if kind == LATER:  # not run, not counted (admission.py says why)
            log.info("message %s (%s): not now, %s; back in %ds", held.message.id, held.key, *held.later[::-1])
            self._set_visibility(held, handle, max(1, int(held.later[0])))
            return
        if kind == WAIT:  # a re-sent deferral, early: wait on without running anything
            assert held.wrapped is not None
            self._wait(held, handle, held.wrapped.remaining(), held.wrapped.resume, deletes)
            return
        if kind == REFUSED and held.refused is not None:
            self._count(event, "invalid")
            self._dead_letter(held, handle, *held.refused, deletes)
            return
        if kind == STATELESS:
            log.warning("message %s: %s", held.message.id, stateless_reason(held.key, held.resume),
                        extra={"message_id": held.message.id})
            self._count(event, "deferred")
            self._set_visibility(held, handle, STATE_WAIT_SECONDS)
            return
        if kind == EXHAUSTED:
            result = Result(FAILED, event, error=f"gave up after {held.attempt} attempts" + (
                " (the worker did not finish them: it died while this one ran alone)" if held.suspect else ""))
        assert result is not None
        outcome = result.outcome
        self._count(event, outcome)
        metrics.observe_result(result, held.message.enqueue_time_ms)
        if outcome in (HANDLED, IGNORED):
            self._unmarked.append(held.key)
            deletes.append((held, handle))
        elif outcome == INVALID:
            self._dead_letter(held, handle, "invalid", result.error, deletes)
        elif outcome == DEFERRED:
            seconds = max(1, math.ceil(result.defer_seconds or 1))
            self._wait(held, handle, seconds, result.resume(held.resume), deletes)
        else:
            if kind != EXHAUSTED:  # the attempt ended in failure: it counts now
                # Which plugins to call again; a failure outside any plugin (no plugin
                # results) keeps what was to be resumed (None: all of them).
                resume = result.resume(held.resume) if result.plugins else held.resume
                held.attempt = max(held.attempt, self._store(self.store.failed, held.key, resume, held.crashed,
                                                             held.message.id) or 0)
                held.claimed = False  # ended in the same step
            if held.attempt >= self.max_attempts or kind == EXHAUSTED:
                result.error = f"{result.error}; dead-lettered after {held.attempt} attempts"
                self._dead_letter(held, handle, "max_attempts", result.error, deletes)
            else:
                w = self.config.worker
                delay = retry_backoff(held.attempt, w.retry_base_seconds, w.retry_max_seconds)
                # A plugin's saved state must reach whichever worker takes the retry.
                if kind != EXHAUSTED and must_resend(held, resume) \
                        and self._resend(held, delay, resume, held.attempt):
                    deletes.append((held, handle))
                else:
                    self._set_visibility(held, handle, delay)
        self._tell_observers(event, result)

    def _tell_observers(self, event: Event | None, result: Result) -> None:
        try:
            self._on_settled(event, result)
        except BaseException as exc:  # noqa: B902 - e.g. sys.exit() in on_settled: changes nothing
            log.error("an on_settled observer failed: %s", one_line(exc))

    def _wait(self, held: Held, handle: str, seconds: float, resume: dict | None, deletes: list) -> None:
        """Come back in `seconds`: hidden when short, re-sent with a delay when long."""
        seconds = max(1, math.ceil(seconds))
        made = max(held.attempt - 1, 0)
        self._store(self.store.deferred, held.key, resume or {}, made, held.message.id)
        held.claimed = False  # ended in the same step
        # Long waits are re-sent (MNS throttles consumers that hold messages); so is a wait
        # carrying a plugin's saved state (or back in a copy that carried one: `must_resend`)
        # (signed; without a key only its name travels, and a worker lacking it waits).
        if (seconds > self.resend_after or must_resend(held, resume)) \
                and self._resend(held, seconds, resume or {}, made):
            deletes.append((held, handle))  # not remembered as settled: the copy has its key
            return
        self._set_visibility(held, handle, min(MAX_VISIBILITY, seconds))

    def _resend(self, held: Held, seconds: int, resume: dict, made: int) -> bool:
        if not resend(self.source, held, seconds, resume, made, self.signer, self.source_max_size):
            return False
        # The copy replaces it: should its delete be lost, its return is a duplicate.
        self._unmarked.append(message_key(held.message.id))
        return True

    def _dead_letter(self, held: Held, handle: str, reason: str, error: str | None, deletes: list) -> None:
        why = dead_letter(held, reason, error, self.source.name, self.store, self.dead_letters,
                          self.dead_letter_max_size)
        if why is not None:
            self._keep(held, handle, why)
            return
        self.counts["dead-lettered"] += 1
        self._unmarked.append(held.key)
        deletes.append((held, handle))

    def _keep(self, held: Held, handle: str, why: str) -> None:
        """Not dead-lettered yet: keep the message and try again after a backoff."""
        log.error("cannot dead-letter message %s: %s; it stays in the queue", held.message.id, why)
        w = self.config.worker
        self._set_visibility(held, handle, retry_backoff(2, w.retry_base_seconds, w.retry_max_seconds))

    def _set_visibility(self, held: Held, handle: str, seconds: int) -> None:
        self._unclaim(held)  # first: once visible, its copy may be taken at once
        try:
            self.source.change_visibility(handle, seconds)
        except MnsError as exc:  # it comes back when its current invisibility ends anyway
            log.warning("%s (message %s)", exc, held.message.id)
        self._finish(held)

    def _unclaim(self, held: Held) -> None:
        """End the claim this run of an unsettled message holds, so that its next copy —
        here or at another worker — runs at once rather than after the claim lapses."""
        if held.claimed:
            held.claimed = False
            self._store(self.store.unclaim, [(held.key, held.message.id)])

    def _mark_settled(self) -> None:
        """Remember settled keys, one store step for all settled since the last time.

        Before the delete (a lost delete makes a duplicate, skipped later); a crash before
        it runs them again (at-least-once), so the batch's linger bounds that window."""
        if self._unmarked:
            keys, self._unmarked = self._unmarked, []
            self._store(self.store.mark_settled_many, keys)

    def _flush_deletes(self, deletes: list[tuple[Held, str]]) -> None:
        """Remember the settled keys, then hand the deletes on in requests of up to 16
        (`deletes.py`: deleted on the settle-deletes thread while this one goes on)."""
        if not deletes:
            return
        self._mark_settled()
        while deletes:
            self.deletes.hand_over(deletes[:MAX_BATCH])
            del deletes[:MAX_BATCH]

    def _store(self, call, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:  # the store is memory, not the truth: MNS still holds the message
            log.error("%s", one_line(exc))
            return None

    def _count(self, event: Event | None, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        metrics.EVENTS.labels(event.name if event else "", outcome).inc()
