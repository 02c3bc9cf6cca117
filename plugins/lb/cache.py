"""What both membership indexes (CLB vserver groups, ALB/NLB server groups) keep between
reads: each group's members for `ttl` seconds, and the entries we removed lately, so a
duplicate event finds nothing left to do without another read."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable


class MembershipCache:
    """Base of `BackendIndex` and `ServerGroupIndex`; entries have `group`, `server_id`, `port`."""

    def __init__(self, ttl: float, workers: int, thread_prefix: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._members: dict[str, tuple[float, list[Any]]] = {}
        self._removed: dict[tuple[str, str, int], float] = {}  # entry -> when we removed it
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=thread_prefix)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def forget(self, removed: Iterable[Any]) -> None:
        """Drop removed entries from the cache: the cloud no longer has them."""
        gone = {(m.group, m.server_id, m.port) for m in removed}
        now = self._clock()
        with self._lock:
            self._removed = {k: t for k, t in self._removed.items() if now - t < self.ttl}
            self._removed.update(dict.fromkeys(gone, now))
            for group, (stamp, members) in list(self._members.items()):
                self._members[group] = (stamp, [m for m in members
                                                if (m.group, m.server_id, m.port) not in gone])

    def removed_lately(self, entry: Any) -> bool:
        """True when we removed this entry within `ttl`: a duplicate event needs no call."""
        with self._lock:
            when = self._removed.get((entry.group, entry.server_id, entry.port))
        return when is not None and self._clock() - when < self.ttl
