"""Per-key batching: many events' work on one resource becomes few calls.

Items queue up per key (an SLB vserver group); a small pool sends each key's items in
batches of at most `max_batch`, with at most one call in flight per key (SLB rejects
concurrent changes to a group with `VServerGroupProcessing`). While a call is in flight
or waiting for a rate-limit token, new items pile up and leave together in the next
call: the slower the API, the bigger the batches. With a `turn` (the cloud client's
`turn(api)`: wait for the token first), a key's batch is chosen only once its call may
leave, so items arriving while it waits for the rate limit join that call.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Hashable

log = logging.getLogger("ecs_worker.plugins.lb.batch")

Done = Callable[[BaseException | None], None]


class KeyedBatcher:
    """`put([(key, kind, item, done), ...])`; `send(key, kind, items)` is called with ≤ max_batch
    items of one kind; `done(exc_or_None)` is called once per item after its call."""

    def __init__(self, send: Callable[[Hashable, str, list[Any]], None], *, max_batch: int = 20,
                 workers: int = 4, name: str = "batch",
                 turn: Callable[[Hashable], AbstractContextManager] | None = None) -> None:
        self._send = send
        self._turn = turn or (lambda key: nullcontext())
        self.max_batch = max_batch
        self._pending: dict[Hashable, deque] = defaultdict(deque)
        self._busy: set[Hashable] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._closed = False

    def put(self, entries: list[tuple[Hashable, str, Any, Done]]) -> None:
        """Queue `(key, kind, item, done)` entries; all are queued before any is sent,
        so one event's several entries for a group can leave in the same call."""
        start = []
        with self._lock:
            if self._closed:
                raise RuntimeError("batcher is shut down")
            for key, kind, item, done in entries:
                self._pending[key].append((kind, item, done))
                if key not in self._busy:  # else the running drain picks it up
                    self._busy.add(key)
                    start.append(key)
        for key in start:
            self._pool.submit(self._drain, key)

    def close(self) -> list[Done]:
        """Stop; return the `done` callbacks of items never sent (the caller fails them)."""
        with self._lock:
            self._closed = True
            left = [done for queue in self._pending.values() for _, _, done in queue]
            self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return left

    def _drain(self, key: Hashable) -> None:
        while True:
            with self._lock:
                if not self._pending.get(key):
                    self._pending.pop(key, None)
                    self._busy.discard(key)
                    return
            with self._turn(key):  # the call may leave now: what came meanwhile joins it
                batch = self._take(key)
                if not batch:
                    continue
                kind = batch[0][0]
                error: BaseException | None = None
                try:
                    self._send(key, kind, [item for _, item, _ in batch])
                except Exception as exc:
                    error = exc
            for _, _, done in batch:
                try:
                    done(error)
                except Exception:  # a broken callback must not stall the key
                    log.exception("batch callback failed")

    def _take(self, key: Hashable) -> list:
        """The next call's entries: up to `max_batch` of the first entry's kind."""
        with self._lock:
            queue = self._pending.get(key)
            if not queue:
                return []
            kind = queue[0][0]
            batch = []
            for entry in list(queue):
                if len(batch) == self.max_batch:
                    break
                if entry[0] == kind:
                    batch.append(entry)
            for entry in batch:
                queue.remove(entry)
            return batch
