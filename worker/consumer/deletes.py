"""Deleting settled messages: one batch request (up to 16), tried three times, on a thread
of its own (`Deletes`, the settle-deletes thread) so that the settle thread goes on settling
— and remembering the next batch's keys in the store — while a delete is on its way.

The settle thread hands a batch over only once its keys are remembered as settled (a lost
delete makes a duplicate, skipped later), and waits while one batch is already waiting.
A delete that RAM refuses does not stop the worker (it keeps going, backing off), but
`/healthz` answers 503 naming the grant until a delete passes again (`health.call_refused`).
Undeleted messages come back; the store knows them as settled, so they are skipped.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..observability import health
from .held import Held
from ..queue.source import MnsError, MnsQueue, fault_delay

log = logging.getLogger("ecs_worker.runner")


class Deletes:
    """Deletes each batch handed over, then tells `finish(*helds)`; `loop` is the thread."""

    def __init__(self, source: MnsQueue, finish: Callable[..., None]) -> None:
        self.source = source
        self._finish = finish
        self._cond = threading.Condition()
        self._batch: list[tuple[Held, str]] | None = None  # handed over, not yet taken
        self._closed = False  # no more batches will come
        self._ended = False  # the thread is gone: nothing handed over would be deleted

    def hand_over(self, batch: list[tuple[Held, str]]) -> None:
        """(The settle thread.) Wait while a batch is waiting, then leave this one; should
        the thread be gone, the messages stay in flight and MNS redelivers them."""
        with self._cond:
            while self._batch is not None and not self._ended:
                self._cond.wait()
            if not self._ended:
                self._batch = batch
                self._cond.notify_all()

    def close(self) -> None:
        """Nothing more will be handed over: `loop` returns once the last batch is deleted."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._batch is None:
                        if self._closed:
                            return
                        self._cond.wait()
                    batch, self._batch = self._batch, None
                    self._cond.notify_all()
                self._delete(batch)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _delete(self, batch: list[tuple[Held, str]]) -> None:
        failed = delete_batch(self.source, [handle for _, handle in batch])
        for held, handle in batch:
            if handle in failed:
                log.warning("%s (message %s); a redelivery will be skipped as a duplicate",
                            failed[handle], held.message.id)
        self._finish(*(held for held, _ in batch))


def delete_batch(source: MnsQueue, handles: list[str]) -> dict[str, MnsError]:
    """Delete these receipt handles; the per-handle failures MNS answered (none on a failed call)."""
    for attempt in range(1, 4):
        try:
            failed = source.delete_batch(handles)
            health.call_allowed("delete")
            return failed
        except MnsError as exc:
            if exc.denied:
                health.call_refused("delete", str(exc))
            if exc.permanent or attempt == 3:
                log.warning("%s; %d message(s) will be redelivered and skipped", exc, len(handles))
                return {}
            delay = fault_delay(attempt) / 4
            log.warning("%s; retrying in %.1fs", exc, delay)
            time.sleep(delay)
    return {}
