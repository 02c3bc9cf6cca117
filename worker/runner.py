"""`ecs-worker run`: the at-least-once MNS consumer.

Three loops, each in its own thread, each with its own MNS client:

- receive (the watchdog's heartbeat): long-polls a batch only while there is room —
  fewer than `concurrency` handlers busy and fewer than `max_pending` messages held —
  and hands each message to the handler pool;
- extend: keeps every held message invisible (being handled, or awaiting a plugin's
  future) by changing its visibility at half-time, and keeps the newest receipt handle;
- settle: turns each outcome into delete (batched), come-back-later (change
  visibility), or dead-letter-then-delete, and tells the `on_settled` observers.

The main thread only waits for signals. First SIGTERM/SIGINT: stop receiving, release
messages not yet started (visibility 0), let the rest finish within `shutdown_timeout`,
settle, exit 0. A second signal exits at once; unsettled messages reappear after their
visibility timeout, so nothing is lost either way.
"""
from __future__ import annotations

import logging
import math
import os
import queue as queues
import random
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import metrics
from .actions import _one_line
from .config import Config, ConfigError
from .context import MAX_DEFER_SECONDS
from .dispatch import (DEFERRED, FAILED, HANDLED, IGNORED, INVALID, Dispatcher,
                       PluginStartupError, Result, invalid)
from .events import Event, InvalidEvent, parse_event
from .notify import Notifier, watchdog_interval
from .sources.mns import MAX_BATCH, SOCKET_SLACK, MnsError, MnsQueue, Message, dead_letter_body
from .store import Store, StoreError

log = logging.getLogger("ecs_worker.runner")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
ERROR_BACKOFF = (0.5, 30.0)  # MNS faults: first and longest pause, jittered
EXTEND_EVERY = 0.5  # seconds between visibility-extender sweeps
DELETE_LINGER = 0.02  # seconds a partial delete batch waits for company
STATUS_EVERY = 1.0
DUPLICATE, RELEASE, EXHAUSTED = "duplicate", "release", "exhausted"


@dataclass(eq=False)
class Held:
    """A received message until it is settled."""

    message: Message
    handle: str  # the newest receipt handle: change-visibility replaces it
    deadline: float  # monotonic time its invisibility ends
    extend_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: bool = False  # being settled: the extender must not touch it any more
    event: Event | None = None
    key: str = ""  # the store key: the event id, else the message id
    attempt: int = 0
    resume: dict[str, float | None] | None = None


def retry_backoff(attempt: int, base: float, cap: float, rng: random.Random = random) -> int:
    """Seconds before a failed event returns: doubling per attempt, capped, half jittered."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return max(1, min(MAX_DEFER_SECONDS, round(delay / 2 + rng.uniform(0, delay / 2))))


def error_backoff(failures: int, rng: random.Random = random) -> float:
    base, cap = ERROR_BACKOFF
    return min(cap, base * 2 ** min(failures - 1, 16)) * rng.uniform(0.5, 1.0)


class Runner:
    def __init__(self, config: Config, dispatcher: Dispatcher, source: MnsQueue, store: Store,
                 dead_letters: MnsQueue | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.source = source
        self.store = store
        self.dead_letters = dead_letters
        self.notifier = notifier or Notifier("")
        w = config.worker
        self.concurrency, self.max_pending, self.max_attempts = w.concurrency, w.max_pending, w.max_attempts
        self.extend_seconds = config.mns.visibility_timeout
        self.queue_visibility = config.mns.visibility_timeout  # replaced by the queue's own at start
        self.signals = 0
        self.last_signal = signal.SIGTERM
        self.counts = {"handled": 0, "failed": 0, "deferred": 0, "invalid": 0, "ignored": 0,
                       "duplicate": 0, "dead-lettered": 0}
        self._pool = ThreadPoolExecutor(w.concurrency, thread_name_prefix="handler")
        self._room = threading.Condition()
        self._busy = 0  # handler tasks whose synchronous part has not finished
        self._held: dict[str, Held] = {}
        self._outcomes: queues.Queue = queues.Queue()  # (Held, kind, Result | None) to settle
        self._stopping = threading.Event()  # stop receiving
        self._closing = threading.Event()  # stop extending and settling
        self._archive_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # == life cycle ================================================================
    def check(self) -> None:
        """Prove the queues exist and the keys work: permanent errors raise `MnsError`,
        transient ones are retried (a signal meanwhile raises a non-permanent one)."""
        self.queue_visibility = self._until_ok(self.source.visibility_timeout)
        if self.dead_letters is not None:
            self._until_ok(self.dead_letters.visibility_timeout)

    def start(self) -> None:
        """Start the receive, extend and settle loops."""
        for name, target in (("receive", self._receive_loop), ("extend", self._extend_loop),
                             ("settle", self._settle_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            held = len(self._held)
            log.info("stopping: no more receiving; %d message(s) in flight", held)
            self.notifier.stopping(f"stopping, {held} in flight")
            self._stopping.set()
            with self._room:
                self._room.notify_all()

    def drain(self, timeout: float) -> bool:
        """After `request_stop`: wait for in-flight work, settle, stop the loops.

        Returns False when messages were still in flight at the deadline (they reappear
        after their visibility timeout).
        """
        now = time.monotonic()
        deadline = now + timeout
        # The receiver may be inside a long poll: wait for it, so what it brings is
        # released at once rather than hidden for a visibility timeout.
        poll_end = now + self.config.mns.wait_seconds + SOCKET_SLACK
        receiver = self._threads[0] if self._threads else None
        while True:
            self.exit_on_second_signal()
            receiving = receiver is not None and receiver.is_alive()
            now = time.monotonic()
            if not self._held and not receiving:
                break
            if now >= deadline and (not receiving or now >= poll_end):
                break
            time.sleep(0.05)
        self._closing.set()
        for t in self._threads[1:]:
            t.join(timeout=10)
        self._pool.shutdown(wait=False)
        left = len(self._held)
        if left:
            log.warning("%d message(s) still in flight at shutdown: MNS will redeliver them after "
                        "their visibility timeout", left)
        return left == 0

    def serve(self) -> int:
        """After `start`: run until a signal; the main thread only watches the signal flag."""
        receiver = self._threads[0]
        while not self.signals:
            if not receiver.is_alive():
                log.error("the receive loop died; stopping so that the service manager restarts us")
                self.request_stop()
                self.drain(self.config.worker.shutdown_timeout)
                return EXIT_FAILURE
            time.sleep(0.1)
        self.request_stop()
        ok = self.drain(self.config.worker.shutdown_timeout)
        log.info("stopped (%s)%s", self.status_line(), "" if ok else "; some messages left in flight")
        return EXIT_OK

    def install_signals(self) -> None:
        def on_signal(signum, frame):  # only flags: the main thread acts on them
            self.signals += 1
            self.last_signal = signum

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def exit_on_second_signal(self) -> None:
        if self.signals > 1:  # impatient operator: go now; unsettled messages come back anyway
            log.warning("second signal: exiting without waiting for %d message(s)", len(self._held))
            logging.shutdown()
            os._exit(128 + self.last_signal)

    def _until_ok(self, call):
        """Call until it succeeds: transient MNS errors back off, permanent ones raise."""
        failures = 0
        while True:
            try:
                return call()
            except MnsError as exc:
                if exc.permanent:
                    raise
                failures += 1
                delay = error_backoff(failures)
                log.warning("%s; retrying in %.1fs", exc, delay)
                self.notifier.watchdog()
                end = time.monotonic() + delay
                while time.monotonic() < end:
                    if self.signals:
                        raise MnsError("stopped before the queue was reachable") from None
                    time.sleep(0.1)

    def status_line(self) -> str:
        c = self.counts
        return (f"handled {c['handled']}, ignored {c['ignored']}, failed {c['failed']}, "
                f"deferred {c['deferred']}, invalid {c['invalid']}, dead-lettered {c['dead-lettered']}, "
                f"duplicates {c['duplicate']}, in flight {len(self._held)}")

    # == receive ===================================================================
    def _receive_loop(self) -> None:
        cfg = self.config.mns
        failures, ready = 0, False
        next_ping = next_status = 0.0
        last_status = ""
        ping_every = min(watchdog_interval() or 1.0, 1.0)
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + ping_every
            if now >= next_status and ready:
                line = self.status_line()
                if line != last_status:  # at most once a second, and only news
                    self.notifier.status(line)
                    last_status = line
                next_status = now + STATUS_EVERY
            room = self._wait_for_room(ping_every)
            if not room:
                continue
            try:
                messages = self.source.receive(min(cfg.batch_size, room), cfg.wait_seconds)
            except MnsError as exc:
                failures += 1
                metrics.RECEIVE_ERRORS.inc()
                delay = error_backoff(failures)
                log.warning("%s; retrying in %.1fs", exc, delay)
                self._stopping.wait(delay)
                continue
            failures = 0
            metrics.poll_completed()
            if not ready:
                ready = True
                log.info("receiving from queue %r (concurrency %d)", self.source.name, self.concurrency)
                self.notifier.ready(self.status_line())
            for message in messages:
                try:
                    self._accept(message)
                except Exception:  # a bug: the message reappears after its timeout
                    log.exception("accepting message %s failed", message.id)

    def _wait_for_room(self, timeout: float) -> int:
        """Block (up to `timeout`) until a handler is free and fewer than max_pending are held."""
        with self._room:
            if self._busy >= self.concurrency or len(self._held) >= self.max_pending:
                self._room.wait(timeout)
            if self._stopping.is_set() or self._busy >= self.concurrency:
                return 0
            return max(0, self.max_pending - len(self._held))

    def _accept(self, message: Message) -> None:
        now = time.monotonic()
        # The queue's timeout bounds what we trust of the server's NextVisibleTime (clock skew).
        remaining = float(self.queue_visibility)
        if message.next_visible_time_ms:
            remaining = min(remaining, message.next_visible_time_ms / 1000 - time.time())
        remaining = max(remaining, 0.0)
        with self._room:
            known = self._held.get(message.id)
            if known is not None:  # redelivered while we still hold it: adopt the new handle
                with known.lock:
                    known.handle = message.receipt_handle
                    known.deadline, known.extend_at = now + remaining, now + remaining / 2
                return
            held = Held(message, message.receipt_handle, now + remaining, now + remaining / 2)
            self._held[message.id] = held
            self._busy += 1
            metrics.INFLIGHT.set(len(self._held))
        self._pool.submit(self._handle, held)

    # == handle ====================================================================
    def _handle(self, held: Held) -> None:
        try:
            if self._stopping.is_set():  # received but not started: let another worker have it
                self._outcomes.put((held, RELEASE, None))
                return
            kind, future = self._start(held)
            if future is None:
                self._outcomes.put((held, kind, None))
            else:
                future.add_done_callback(lambda f: self._outcomes.put((held, kind, _result(f, held))))
        except Exception as exc:  # a bug here must not leak the message or the slot
            log.exception("handling message %s failed", held.message.id)
            self._outcomes.put((held, "result", Result(FAILED, held.event, error=_one_line(exc))))
        finally:
            with self._room:
                self._busy -= 1
                self._room.notify_all()

    def _start(self, held: Held) -> tuple[str, Future | None]:
        message = held.message
        self._archive(message)
        held.key = f"mns:{message.id}"
        try:
            event = parse_event(message.body)
        except InvalidEvent as exc:
            if self._settled(held.key):  # dead-lettered already; only its delete was lost
                return DUPLICATE, None
            return "result", _done(invalid(str(exc)))
        held.event = event
        held.key = event.id or held.key
        try:
            if self.store.is_settled(held.key):
                return DUPLICATE, None
            held.attempt = self.store.attempts(held.key)
            if held.attempt >= self.max_attempts:
                return EXHAUSTED, None  # e.g. it crashed the worker every time
            held.resume = self.store.resume(held.key)
            held.attempt = self.store.begin_attempt(held.key)
        except StoreError as exc:  # degrade: MNS's count stands in for ours
            log.error("%s; counting attempts by DequeueCount", exc)
            held.attempt = message.dequeue_count
        return "result", self.dispatcher.start(event, held.resume)

    def _archive(self, message: Message) -> None:
        path = self.config.worker.archive
        if not path:
            return
        text = message.body.decode("utf-8", "replace").strip().replace("\r", "").replace("\n", " ")
        try:
            with self._archive_lock, open(path, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            log.error("archive %s: %s", path, exc.strerror)

    # == extend ====================================================================
    def _extend_loop(self) -> None:
        while not self._closing.wait(EXTEND_EVERY):
            now = time.monotonic()
            with self._room:
                due = [h for h in self._held.values() if h.extend_at <= now]
            for held in due:
                if self._closing.is_set():
                    return
                try:
                    self._extend(held)
                except Exception:  # a bug must not end extending for every message
                    log.exception("extending message %s failed", held.message.id)

    def _extend(self, held: Held) -> None:
        with held.lock:
            if held.closing:
                return
            try:
                held.handle = self.source.change_visibility(held.handle, self.extend_seconds)
            except MnsError as exc:
                if exc.stale_handle:  # it became visible again: the next receive adopts it
                    log.warning("message %s: lost its invisibility (%s); it may be handled twice",
                                held.message.id, exc.code)
                    held.extend_at = math.inf
                else:
                    log.warning("%s; will retry", exc)
                    held.extend_at = time.monotonic() + 1.0
                return
            now = time.monotonic()
            held.deadline, held.extend_at = now + self.extend_seconds, now + self.extend_seconds / 2

    # == settle ====================================================================
    def _settle_loop(self) -> None:
        deletes: list[tuple[Held, str]] = []
        while True:
            try:
                item = self._outcomes.get(timeout=DELETE_LINGER if deletes else 0.2)
            except queues.Empty:
                self._flush_deletes(deletes)
                if self._closing.is_set():
                    return
                continue
            try:
                self._settle(*item, deletes=deletes)
            except Exception:  # never let one message stop settling for all
                log.exception("settling message %s failed", item[0].message.id)
                self._finish(item[0])
            if len(deletes) >= MAX_BATCH:
                self._flush_deletes(deletes)

    def _settle(self, held: Held, kind: str, result: Result | None, deletes: list) -> None:
        with held.lock:
            held.closing = True
            handle = held.handle
        message, event = held.message, held.event
        if kind == RELEASE:
            self._set_visibility(held, handle, 0)
            return
        if kind == DUPLICATE:
            log.info("event %s already settled: deleting the redelivered copy", held.key)
            self._count(event, "duplicate")
            deletes.append((held, handle))
            return
        if kind == EXHAUSTED:
            result = Result(FAILED, event, error=f"gave up after {held.attempt} attempts "
                                                 "(the worker did not finish them)")
        assert result is not None
        outcome = result.outcome
        self._count(event, outcome)
        self._observe(held, result)
        if outcome in (HANDLED, IGNORED):
            self._store(self.store.mark_settled, held.key)
            deletes.append((held, handle))
        elif outcome == INVALID:
            self._dead_letter(held, handle, "invalid", result.error, deletes)
        elif outcome == DEFERRED:
            self._store(self.store.undo_attempt, held.key)
            self._store(self.store.set_resume, held.key, self._resume_after(held, result))
            seconds = max(1, min(MAX_DEFER_SECONDS, math.ceil(result.defer_seconds or 1)))
            self._set_visibility(held, handle, seconds)
        elif held.attempt >= self.max_attempts or kind == EXHAUSTED:
            result.error = f"{result.error}; dead-lettered after {held.attempt} attempts"
            self._dead_letter(held, handle, "max_attempts", result.error, deletes)
        else:
            self._store(self.store.set_resume, held.key, self._resume_after(held, result))
            w = self.config.worker
            self._set_visibility(held, handle, retry_backoff(held.attempt, w.retry_base_seconds,
                                                             w.retry_max_seconds))
        self.dispatcher.settled(event, result)

    def _resume_after(self, held: Held, result: Result) -> dict[str, float | None]:
        """Plugins to call on return; a plugin deferring again keeps its first deferral time."""
        before = held.resume or {}
        return {name: (before.get(name) or since) if since is not None else None
                for name, since in result.retry_plugins.items()}

    def _dead_letter(self, held: Held, handle: str, reason: str, error: str | None, deletes: list) -> None:
        m = held.message
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "queue": self.source.name, "message_id": m.id, "reason": reason, "error": error,
                  "attempts": held.attempt or m.dequeue_count, "dequeue_count": m.dequeue_count,
                  "event_id": held.event.id if held.event else None,
                  "body": m.body.decode("utf-8", "replace")}
        try:
            self.store.record_dead_letter(record)
            if self.dead_letters is not None:
                self.dead_letters.send(dead_letter_body(record))
        except (StoreError, MnsError) as exc:
            # Not recorded everywhere: keep the message and try again after a backoff.
            log.error("cannot dead-letter message %s: %s; it stays in the queue", m.id, exc)
            self._set_visibility(held, handle, retry_backoff(2, self.config.worker.retry_base_seconds,
                                                             self.config.worker.retry_max_seconds))
            return
        metrics.DEAD_LETTERS.labels(reason).inc()
        self.counts["dead-lettered"] += 1
        log.warning("message %s dead-lettered (%s): %s", m.id, reason, error,
                    extra={"message_id": m.id, "event_id": record["event_id"]})
        self._store(self.store.mark_settled, held.key)
        deletes.append((held, handle))

    def _set_visibility(self, held: Held, handle: str, seconds: int) -> None:
        try:
            self.source.change_visibility(handle, seconds)
        except MnsError as exc:  # it comes back when its current invisibility ends anyway
            log.warning("%s (message %s)", exc, held.message.id)
        self._finish(held)

    def _flush_deletes(self, deletes: list[tuple[Held, str]]) -> None:
        if not deletes:
            return
        batch = deletes[:MAX_BATCH]
        del deletes[:MAX_BATCH]
        failed: dict[str, MnsError] = {}
        for attempt in range(1, 4):
            try:
                failed = self.source.delete_batch([handle for _, handle in batch])
                break
            except MnsError as exc:
                if exc.permanent or attempt == 3:
                    # Undeleted messages come back; the store knows them as settled.
                    log.warning("%s; %d message(s) will be redelivered and skipped", exc, len(batch))
                    break
                delay = error_backoff(attempt) / 4
                log.warning("%s; retrying in %.1fs", exc, delay)
                time.sleep(delay)
        for held, handle in batch:
            if handle in failed:
                log.warning("%s (message %s); a redelivery will be skipped as a duplicate",
                            failed[handle], held.message.id)
            self._finish(held)
        if deletes:
            self._flush_deletes(deletes)

    def _finish(self, held: Held) -> None:
        with self._room:
            if self._held.get(held.message.id) is held:
                del self._held[held.message.id]
            metrics.INFLIGHT.set(len(self._held))
            self._room.notify_all()

    # == bookkeeping ===============================================================
    def _settled(self, key: str) -> bool:
        try:
            return self.store.is_settled(key)
        except StoreError as exc:
            log.error("%s", exc)
            return False

    def _store(self, call, *args: Any) -> None:
        try:
            call(*args)
        except StoreError as exc:
            log.error("%s", exc)

    def _count(self, event: Event | None, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        metrics.EVENTS.labels(event.name if event else "", outcome).inc()

    def _observe(self, held: Held, result: Result) -> None:
        if result.outcome == INVALID:
            return
        metrics.HANDLER_SECONDS.observe(result.seconds)
        if result.outcome in (HANDLED, IGNORED) and held.message.enqueue_time_ms:
            metrics.EVENT_LAG.observe(max(0.0, time.time() - held.message.enqueue_time_ms / 1000))
        for name, part in result.plugins.items():
            if part.status == FAILED:
                metrics.PLUGIN_ERRORS.labels(name).inc()


def _done(result: Result) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


def _result(future: Future, held: Held) -> Result:
    exc = future.exception()
    if exc is not None:
        return Result(FAILED, held.event, error=_one_line(exc))
    return future.result()


# == entry point =====================================================================
def main(args) -> int:
    """`ecs-worker run -c CONFIG [--dry-run]`: 0 after a clean stop, 2 for configuration."""
    from .cli import _setup
    from .credentials import credentials_provider

    try:
        config, plugins, runtime = _setup(args, dry_run=getattr(args, "dry_run", False))
        if not config.mns.endpoint:
            raise ConfigError(f"{config.path}: [mns] endpoint: required for `run`")
        provider = credentials_provider(config.credentials)
        store = Store(config.worker.state_dir, config.worker.dedupe_ttl)
    except (ConfigError, StoreError) as exc:
        return _fail(exc)
    metrics.watch_gateway(runtime.gateway)
    dispatcher = Dispatcher(plugins.pm, runtime, config.plugins.call_timeout)
    try:
        source = MnsQueue(config.mns.endpoint, config.mns.queue, provider, config.mns.wait_seconds)
        dlq = (MnsQueue(config.mns.endpoint, config.mns.dead_letter_queue, provider, 0)
               if config.mns.dead_letter_queue else None)
        runner = Runner(config, dispatcher, source, store, dlq, Notifier())
        runner.install_signals()
        runner.check()
        dispatcher.startup()
    except (MnsError, PluginStartupError) as exc:
        store.close()
        if isinstance(exc, MnsError) and not exc.permanent:  # stopped while MNS was unreachable
            return EXIT_OK
        return _fail(exc)
    log.info("ecs-worker started: queue %r at %s, concurrency %d, max_pending %d%s",
             config.mns.queue, config.mns.endpoint, config.worker.concurrency,
             config.worker.max_pending, ", dry run" if runtime.dry_run else "")
    try:
        runner.start()
        return runner.serve()
    finally:
        dispatcher.shutdown()
        store.close()


def _fail(exc: Exception) -> int:
    print(f"ecs-worker: error: {exc}", file=sys.stderr)
    return EXIT_USAGE
