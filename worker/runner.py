"""`ecs-worker run`: the at-least-once MNS consumer.

Three loops, each in its own thread, each with its own MNS client:

- receive (the watchdog's heartbeat): long-polls a batch only while there is room —
  fewer than `concurrency` handlers busy and fewer than `max_pending` messages held —
  and hands each message to the handler pool;
- extend: keeps every held message invisible (being handled, or awaiting a plugin's
  future) by changing its visibility at half-time, and keeps the newest receipt handle;
- settle (`settle.py`): turns each outcome into delete (batched), come-back-later
  (change visibility), or dead-letter-then-delete, and tells the `on_settled` observers.

The main thread only waits for signals. First SIGTERM/SIGINT: stop receiving, release
messages not yet started (visibility 1 s), let the rest finish within `shutdown_timeout`,
settle, exit 0. A second signal exits at once; unsettled messages reappear after their
visibility timeout, so nothing is lost either way.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future

from . import metrics
from .actions import _one_line
from .config import Config, ConfigError
from .dispatch import FAILED, Dispatcher, PluginStartupError, Result, invalid
from .events import InvalidEvent, parse_event
from .handlers import Handlers
from .notify import Notifier, watchdog_interval
from .settle import DUPLICATE, EXHAUSTED, RELEASE, RESULT, Held, Settler, error_backoff
from .sources.mns import SOCKET_SLACK, MnsError, MnsQueue, Message
from .store import Store, StoreError

log = logging.getLogger("ecs_worker.runner")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXTEND_EVERY = 0.5  # seconds between visibility-extender sweeps
STATUS_EVERY = 1.0


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
        self._pool = Handlers(w.concurrency, self._handle)
        self._room = threading.Condition()
        self._busy = 0  # handler tasks whose synchronous part has not finished
        self._held: dict[str, Held] = {}
        self._stopping = threading.Event()  # stop receiving
        self._closing = threading.Event()  # stop extending and settling
        self.settler = Settler(config, source, store, dispatcher, self._finish, dead_letters)
        self.counts = self.settler.counts
        self._threads: list[threading.Thread] = []

    # == life cycle ================================================================
    def check(self) -> None:
        """Prove the queues exist and the keys work: permanent errors raise `MnsError`,
        transient ones are retried (a signal meanwhile raises a non-permanent one)."""
        self.queue_visibility = self._until_ok(self.source.visibility_timeout)
        if self.dead_letters is not None:
            self._until_ok(self.dead_letters.visibility_timeout)

    def start(self) -> None:
        """Start the receive, extend and settle loops and the handlers."""
        self._pool.start()
        for name, target in (("receive", self._receive_loop), ("extend", self._extend_loop),
                             ("settle", self.settler.loop)):
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
        self.settler.close()
        for t in self._threads[1:]:
            t.join(timeout=10)
        self._pool.shutdown()
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
                messages = self.source.receive(min(cfg.batch_size, room), cfg.wait_seconds, self._stopping)
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
            if messages:
                try:
                    self._take(messages)
                except Exception:  # a bug: the messages reappear after their timeout
                    log.exception("taking %d message(s) on failed", len(messages))

    def _wait_for_room(self, timeout: float) -> int:
        """Block (up to `timeout`) until a handler is free and fewer than max_pending are held."""
        with self._room:
            if not self._has_room():
                self._room.wait(timeout)
                metrics.loop_alive()
            if self._stopping.is_set() or self._busy >= self.concurrency:
                return 0
            return max(0, self.max_pending - len(self._held))

    def _has_room(self) -> bool:  # with self._room held
        return self._busy < self.concurrency and len(self._held) < self.max_pending

    def _room_opened(self) -> None:  # with self._room held
        # Only once there is room: waking the receiver per finished message, to find
        # the pool still full, costs a GIL hand-over each time.
        if self._has_room():
            self._room.notify_all()

    def _take(self, messages: list[Message]) -> None:
        """Hold a received batch, count its attempts in one store transaction, and hand
        each message to a handler (or straight to the settler when nothing is to run)."""
        fresh = self._accept(messages)
        if not fresh:
            return
        self._archive(fresh)
        if self._stopping.is_set():  # received while stopping: let another worker have them
            for held in fresh:
                self.settler.put(held, RELEASE)
            return
        to_run = []
        for held, kind, result in self._begin(fresh):
            if kind == RESULT and result is None:
                to_run.append(held)
            else:
                self.settler.put(held, kind, result)
        with self._room:  # once per batch: every lock the handlers also take costs a hand-over
            self._busy += len(to_run)
        self._pool.submit(to_run)

    def _accept(self, messages: list[Message]) -> list[Held]:
        """Register the batch as held; a message we still hold (redelivered because its
        invisibility lapsed) only gets its new receipt handle. Returns the new ones."""
        now, wall = time.monotonic(), time.time()
        fresh = []
        with self._room:
            for message in messages:
                # The queue's timeout bounds what we trust of NextVisibleTime (clock skew).
                remaining = float(self.queue_visibility)
                if message.next_visible_time_ms:
                    remaining = min(remaining, message.next_visible_time_ms / 1000 - wall)
                remaining = max(remaining, 0.0)
                known = self._held.get(message.id)
                if known is not None:
                    with known.lock:
                        known.handle = message.receipt_handle
                        known.deadline, known.extend_at = now + remaining, now + remaining / 2
                    continue
                held = Held(message, message.receipt_handle, now + remaining, now + remaining / 2)
                self._held[message.id] = held
                fresh.append(held)
            metrics.INFLIGHT.set(len(self._held))
        return fresh

    def _begin(self, batch: list[Held]) -> list[tuple[Held, str, Result | None]]:
        """Parse each message and decide what happens to it: (held, kind, result), where
        (RESULT, None) means "dispatch it". One store transaction for the whole batch,
        which counts the attempts before any of them starts."""
        decided: list[tuple[Held, str, Result | None]] = []
        valid: list[Held] = []
        unreadable: list[tuple[Held, str]] = []
        for held in batch:
            held.key = f"mns:{held.message.id}"
            try:
                held.event = parse_event(held.message.body)
            except InvalidEvent as exc:
                unreadable.append((held, str(exc)))
                continue
            held.key = held.event.id or held.key
            valid.append(held)
        if unreadable:
            try:  # dead-lettered already, only the delete was lost: just delete it
                settled = self.store.settled_among([h.key for h, _ in unreadable])
            except StoreError as exc:
                log.error("%s", exc)
                settled = set()
            decided += [(h, DUPLICATE, None) if h.key in settled else (h, RESULT, invalid(error))
                        for h, error in unreadable]
        try:
            attempts = self.store.begin_attempts([h.key for h in valid], self.max_attempts)
        except StoreError as exc:  # degrade: MNS's count stands in for ours
            log.error("%s; counting attempts by DequeueCount", exc)
            for held in valid:
                held.attempt = held.message.dequeue_count
                decided.append((held, RESULT, None))
            return decided
        for held, attempt in zip(valid, attempts):
            held.attempt, held.resume = attempt.number, attempt.resume
            if attempt.settled:
                decided.append((held, DUPLICATE, None))
            elif attempt.exhausted:  # e.g. it crashed the worker every time
                decided.append((held, EXHAUSTED, None))
            else:
                held.counted = True
                decided.append((held, RESULT, None))
        return decided

    # == handle ====================================================================
    def _handle(self, held: Held) -> None:
        try:
            if self._stopping.is_set():  # received but not started: let another worker have it
                self.settler.put(held, RELEASE)
                return
            future = self.dispatcher.start(held.event, held.resume)
            future.add_done_callback(lambda f: self.settler.put(held, RESULT, _result(f, held)))
        except Exception as exc:  # a bug here must not leak the message or the slot
            log.exception("handling message %s failed", held.message.id)
            self.settler.put(held, RESULT, Result(FAILED, held.event, error=_one_line(exc)))
        finally:
            with self._room:
                self._busy -= 1
                self._room_opened()

    def _archive(self, batch: list[Held]) -> None:
        path = self.config.worker.archive
        if not path:
            return
        text = "".join(h.message.body.decode("utf-8", "replace").strip().replace("\r", "")
                       .replace("\n", " ") + "\n" for h in batch)
        try:
            with open(path, "a", encoding="utf-8") as fh:  # only the receive thread writes
                fh.write(text)
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

    def _finish(self, *done: Held) -> None:
        with self._room:
            for held in done:
                if self._held.get(held.message.id) is held:
                    del self._held[held.message.id]
            metrics.INFLIGHT.set(len(self._held))
            self._room_opened()


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
    if config.metrics.listen:
        from .health import serve as serve_metrics

        try:
            serve_metrics(config.metrics.listen, config.mns.wait_seconds)
        except (OSError, ValueError) as exc:
            store.close()
            return _fail(ConfigError(f"{config.path}: [metrics] listen {config.metrics.listen!r}: {exc}"))
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
