"""Each plugin's own threads: its hook calls can hang or overrun without taking anyone
else's threads, and without holding up the process's exit.

Daemon threads, not a `ThreadPoolExecutor`: the executor's threads are joined at
interpreter exit, so one call that never returns would keep a stopped worker alive.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Any, Callable

from .call_result import args_for
from ..text import one_line

log = logging.getLogger("ecs_worker.dispatch")

OBSERVER_BACKLOG = 10000  # on_settled calls one plugin may have waiting before more are dropped
OBSERVER_BATCH_SECONDS = 0.005  # a busy observer looks for more calls this often
DROP_LOG_EVERY = 10.0  # seconds between "dropped" error lines per plugin


class LaneStuck(RuntimeError):
    """The plugin cannot take the call now: its threads are stuck, or it is shut down."""


class Lane:
    """One plugin's call threads: at most `size`, started on demand.

    When all `size` threads are busy, a call waits its turn (the caller's own time limit
    covers the wait); when all of them are stuck in calls that overran `timeout`, a new
    call is refused at once with `LaneStuck` (the dispatcher defers its event: the event
    waits for the plugin, it did not fail).
    """

    def __init__(self, plugin: str, size: int, timeout: float) -> None:
        self.plugin, self.size, self.timeout = plugin, size, timeout
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one release per thread waiting for work
        self._lock = threading.Lock()
        self._threads = 0
        self._running: dict[int, float] = {}  # thread id -> when its current call started
        self._closed = False

    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Future:
        """`fn(**kwargs)` on one of the lane's threads; anything it raises (BaseException
        included) ends up in the returned future."""
        call: Future = Future()
        with self._lock:
            if self._closed:
                raise LaneStuck("not called: the plugin is shut down")
            if len(self._running) >= self.size and time.monotonic() - max(self._running.values()) > self.timeout:
                raise LaneStuck(f"not called: all {self.size} call threads of the plugin are stuck "
                                f"in calls that overran {self.timeout:g}s")
            self._work.put((call, fn, kwargs))
            if not self._idle.acquire(blocking=False) and self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._run, name=f"plugin-{self.plugin}-{self._threads}",
                                 daemon=True).start()
        return call

    def stuck(self, now: float) -> tuple[int, float | None]:
        """(calls running past `timeout`, since when all `size` threads have been stuck or None)."""
        with self._lock:
            starts = list(self._running.values())
        overran = sum(1 for t in starts if now - t > self.timeout)
        if len(starts) < self.size or overran < len(starts):
            return overran, None
        return overran, max(starts) + self.timeout

    def close(self) -> None:
        """Let idle threads end; busy ones end after their call (or with the process)."""
        with self._lock:
            self._closed = True
            for _ in range(self._threads):
                self._work.put(None)

    def _run(self) -> None:
        me = threading.get_ident()
        while True:
            item = self._work.get()
            if item is None:
                return
            call, fn, kwargs = item
            item = None
            if call.set_running_or_notify_cancel():  # not cancelled by a caller that gave up
                with self._lock:
                    self._running[me] = time.monotonic()
                try:
                    value, exc = fn(**kwargs), None
                except BaseException as error:  # SystemExit too: the plugin's failure, not ours
                    value, exc = None, error
                with self._lock:
                    del self._running[me]
                if exc is None:
                    call.set_result(value)
                else:
                    call.set_exception(exc)
                call = fn = kwargs = value = exc = None
            self._idle.release()


class Observer:
    """One plugin's `on_settled` calls, run in order on one thread without holding the
    caller (the worker's settle thread).

    A wake-up per call would cost more than most calls (a GIL hand-over each way), so an
    idle observer is woken by the first call and runs it at once; then, while calls keep
    coming, it looks again every few milliseconds and runs all that gathered meanwhile,
    with no wake-up from the caller (one per burst, not two: woken, then gathering). A call
    that overruns `timeout` makes later ones be dropped (logged, counted) until it
    returns, and so does a backlog of `backlog` calls.
    """

    def __init__(self, plugin: str, timeout: float, backlog: int = OBSERVER_BACKLOG) -> None:
        self.plugin, self.timeout, self.backlog = plugin, timeout, backlog
        self._items: deque[tuple[Callable[..., Any], dict[str, Any], Future | None]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._asleep = False
        self._urgent = False  # someone waits for a call: no gathering
        self._since: float | None = None  # when the running call started
        self._closed = False
        self._dropped = 0
        self._dropped_logged = -math.inf

    def post(self, fn: Callable[..., Any], kwargs: dict[str, Any], wait: bool = False) -> Future | None:
        """Queue `fn(**kwargs)`; with `wait`, return a future of its outcome. Raises
        `LaneStuck` when the plugin's observer is stuck, far behind, or shut down."""
        call: Future | None = Future() if wait else None
        with self._cond:
            if self._closed:
                raise LaneStuck("not called: the plugin is shut down")
            since = self._since  # set and cleared by the observer's thread without the lock
            if since is not None and time.monotonic() - since > self.timeout:
                raise LaneStuck(f"not called: its previous call overran {self.timeout:g}s")
            if len(self._items) >= self.backlog:
                raise LaneStuck(f"not called: {self.backlog} calls are already waiting")
            self._items.append((fn, kwargs, call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"observer-{self.plugin}", daemon=True)
                self._thread.start()
            if wait:
                self._urgent = True
            if self._asleep:
                self._asleep = False
                self._cond.notify()
        return call

    def drain(self, deadline: float) -> bool:
        """Wait (until `deadline`) for the calls posted so far to have run."""
        try:
            marker = self.post(_nothing, {}, wait=True)
        except LaneStuck:
            return False
        try:
            marker.exception(max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return False
        return True

    def dropped(self, why: str) -> None:
        """Count a refused call; log now and then, with the count."""
        now = time.monotonic()
        with self._cond:
            self._dropped += 1
            if now - self._dropped_logged < DROP_LOG_EVERY:
                return
            self._dropped_logged, count, self._dropped = now, self._dropped, 0
        log.error("%s; %d call(s) dropped", why, count, extra={"plugin": self.plugin})

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._items:
                    if self._closed:
                        return
                    self._asleep = True  # idle: the next `post` wakes it
                    self._cond.wait()
                    continue
                batch, self._items = self._items, deque()
                self._urgent = False
            for fn, kwargs, call in batch:
                self._since = time.monotonic()  # one store, atomic: `post` reads it once
                try:
                    value, exc = fn(**kwargs), None
                except BaseException as error:  # the plugin's failure, never the observer's end
                    value, exc = None, error
                self._since = None
                if call is not None:
                    call.set_result(value) if exc is None else call.set_exception(exc)
            batch = fn = kwargs = call = value = exc = None
            with self._cond:
                gather = not self._urgent and not self._closed
            if gather:  # busy: look again in a moment rather than be woken per call
                time.sleep(OBSERVER_BATCH_SECONDS)


class PluginThreads:
    """Each plugin's lane and observer, made on its first call (lock-free once made)."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size, self.timeout = size, timeout
        self._lanes: dict[str, Lane] = {}
        self._observers: dict[str, Observer] = {}  # on_settled: one thread per plugin, in order
        self._lock = threading.Lock()

    def lane(self, name: str) -> Lane:
        return self._per_plugin(self._lanes, name, lambda: Lane(name, self.size, self.timeout))

    def observer(self, name: str) -> Observer:
        return self._per_plugin(self._observers, name, lambda: Observer(name, self.timeout))

    def observers(self) -> list[Observer]:
        with self._lock:
            return list(self._observers.values())

    def stuck(self) -> dict[str, tuple[int, float | None]]:
        """Per plugin: (calls running past `timeout`, since when all its threads are stuck)."""
        now = time.monotonic()
        with self._lock:
            lanes = list(self._lanes.values())
        return {lane.plugin: lane.stuck(now) for lane in lanes}

    def close(self) -> None:
        with self._lock:
            every = [*self._lanes.values(), *self._observers.values()]
        for one in every:
            one.close()

    def _per_plugin(self, table: dict, name: str, make: Callable[[], Any]) -> Any:
        found = table.get(name)
        if found is None:
            with self._lock:
                found = table.get(name)
                if found is None:
                    found = table[name] = make()
        return found


def _nothing() -> None:
    pass


def observe(name: str, impl: Any, context: Callable[..., Any], event: Any, result: Any) -> None:
    """One posted `on_settled` call: its `ctx` and arguments are made here, on the observer's
    thread, not on the settle thread that posted it; its failure is logged, and changes nothing."""
    try:
        impl.function(**args_for(impl, event=event, result=result, ctx=context(name, event)))
    except BaseException as exc:
        log.error("plugin %s failed in on_settled: %s", name, one_line(exc), extra={"plugin": name})
