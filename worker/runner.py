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
messages not yet started (visibility 0), let the rest finish within `shutdown_timeout`,
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
from concurrent.futures import Future, ThreadPoolExecutor

from . import metrics
from .actions import _one_line
from .config import Config, ConfigError
from .dispatch import FAILED, Dispatcher, PluginStartupError, Result, invalid
from .events import InvalidEvent, parse_event
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
        self._pool = ThreadPoolExecutor(w.concurrency, thread_name_prefix="handler")
        self._room = threading.Condition()
        self._busy = 0  # handler tasks whose synchronous part has not finished
        self._held: dict[str, Held] = {}
        self._stopping = threading.Event()  # stop receiving
        self._closing = threading.Event()  # stop extending and settling
        self.settler = Settler(config, source, store, dispatcher, self._finish, dead_letters)
        self.counts = self.settler.counts
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
                metrics.loop_alive()
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
                self.settler.put(held, RELEASE)
                return
            kind, future = self._start(held)
            if future is None:
                self.settler.put(held, kind)
            else:
                future.add_done_callback(lambda f: self.settler.put(held, kind, _result(f, held)))
        except Exception as exc:  # a bug here must not leak the message or the slot
            log.exception("handling message %s failed", held.message.id)
            self.settler.put(held, RESULT, Result(FAILED, held.event, error=_one_line(exc)))
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
            return RESULT, _done(invalid(str(exc)))
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
        return RESULT, self.dispatcher.start(event, held.resume)

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

    def _settled(self, key: str) -> bool:
        try:
            return self.store.is_settled(key)
        except StoreError as exc:
            log.error("%s", exc)
            return False

    def _finish(self, held: Held) -> None:
        with self._room:
            if self._held.get(held.message.id) is held:
                del self._held[held.message.id]
            metrics.INFLIGHT.set(len(self._held))
            self._room.notify_all()

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
