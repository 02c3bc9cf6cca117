"""Deleting settled messages: one batch request (up to 16), tried three times.

A delete that RAM refuses does not stop the worker (it keeps going, backing off), but
`/healthz` answers 503 naming the grant until a delete passes again (`health.call_refused`).
Undeleted messages come back; the store knows them as settled, so they are skipped.
"""
from __future__ import annotations

import logging
import time

from ..observability import health
from ..queue.source import MnsError, MnsQueue, fault_delay

log = logging.getLogger("ecs_worker.runner")


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
