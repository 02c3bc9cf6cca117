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

Whatever goes wrong between receive and settle is one message's failure, never its
batch's: each message is parsed, keyed and looked up on its own terms. Any internal
thread that dies (receive, extend, settle, a handler, the dispatcher's deadlines) stops
the worker loudly: logged, `/healthz` 503, no more watchdog pings, exit 1 — the service
manager restarts it. Crash isolation (`crashes.py`): a journal of running messages finds
the one that kills the process. See docs/reliability.md.
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

from . import health, metrics
from .text import one_line
from .config import Config, ConfigError, check_runnable
from .crashes import Gate, Journal, recover
from .deferred import unwrap
from .dispatch import Dispatcher, PluginStartupError
from .outcomes import FAILED, invalid, Result
from .events import InvalidEvent, parse_event
from .handlers import Handlers
from .keys import event_key, message_key
from .notify import Notifier, watchdog_interval
from .settle import DUPLICATE, EXHAUSTED, RELEASE, RESULT, WAIT, Held, Settler, error_backoff
from .sources.mns import SOCKET_SLACK, MnsError, MnsQueue, Message
from .store import Attempt, Store, StoreError

log = logging.getLogger("ecs_worker.runner")

from .outcomes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE  # noqa: E402,F401 - re-exported for setup/doctor
EXTEND_EVERY = 0.5  # seconds between visibility-extender sweeps
STATUS_EVERY = 1.0
RECOVER_EVERY = 30.0  # seconds between looks for the journals of dead workers sharing state_dir


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
        self._pool = Handlers(w.concurrency, self._handle, on_death=self._died)
        self._room = threading.Condition()
        self._busy = 0  # handler tasks whose synchronous part has not finished
        self._held: dict[str, Held] = {}
        self._stopping = threading.Event()  # stop receiving
        self._closing = threading.Event()  # stop extending and settling
        self.settler = Settler(config, source, store, dispatcher, self._finish, dead_letters)
        self.counts = self.settler.counts
        self._threads: list[threading.Thread] = []
        self._gate = Gate()  # crash suspects run alone
        self._journal: Journal | None = None
        self.fatal: str | None = None  # the internal thread that died, if one did

    # == life cycle ================================================================
    def check(self) -> None:
        """Prove the queues exist and the keys work: permanent errors raise `MnsError`,
        transient ones are retried (a signal meanwhile raises a non-permanent one)."""
        self.queue_visibility = self._until_ok(self.source.visibility_timeout)
        self.settler.source_max_size = self._until_ok(self.source.maximum_message_size)
        if self.dead_letters is not None:
            self.settler.dead_letter_max_size = self._until_ok(self.dead_letters.maximum_message_size)

    def start(self) -> None:
        """Recover the journals of dead workers, then start the receive, extend and
        settle loops and the handlers."""
        state_dir = self.config.worker.state_dir
        self._journal = Journal(state_dir)
        self._recover()
        self._pool.start()
        for name, target in (("receive", self._receive_loop), ("extend", self._extend_loop),
                             ("settle", self.settler.loop)):
            t = threading.Thread(target=self._guarded(name, target), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _guarded(self, name: str, target):
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: B902 - a dead loop must never be silent
                self._died(name, exc)
        return run

    def _died(self, name: str, exc: BaseException) -> None:
        """An internal thread died: fail loudly so that the service manager restarts us."""
        if self.fatal is None:
            self.fatal = name
        health.thread_died(name)
        log.critical("internal thread %r died (%s); stopping with exit code 1 so that the service "
                     "manager restarts the worker", name, one_line(exc), exc_info=exc)
        self._stopping.set()
        with self._room:
            self._room.notify_all()

    def _dead_thread(self) -> str | None:
        """The name of an internal thread that is no longer running although it should."""
        if self.fatal:
            return self.fatal
        for t in self._threads:
            if not t.is_alive() and not (t.name == "receive" and self._stopping.is_set()):
                return t.name
        if not self._pool.alive():
            return "handler"
        deadlines = getattr(getattr(self.dispatcher, "_deadlines", None), "_thread", None)
        if isinstance(deadlines, threading.Thread) and not deadlines.is_alive():
            return "deadlines"
        return None

    def _recover(self) -> None:
        """Suspects and charges from the journals of workers that died (`crashes.py`)."""
        try:
            recover(self.config.worker.state_dir, self.store.crashed, own=self._journal)
        except (OSError, StoreError) as exc:
            log.error("crash journals in %s: %s", self.config.worker.state_dir, exc)

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
        if self._journal is not None:
            self._journal.close()
        left = len(self._held)
        if left:
            log.warning("%d message(s) still in flight at shutdown: MNS will redeliver them after "
                        "their visibility timeout", left)
        return left == 0

    def serve(self) -> int:
        """After `start`: run until a signal; the main thread only watches the signal flag."""
        while not self.signals:
            dead = self._dead_thread()
            if dead:
                health.thread_died(dead)
                log.error("the %s thread died; stopping so that the service manager restarts us", dead)
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
            if now >= next_ping and self.fatal is None:  # a dead thread: let the watchdog bite
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
                self._take(messages)

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
        """Hold a received batch, look its keys up in one store read, and hand each
        message to a handler (or straight to the settler when nothing is to run).

        Whatever raises here is the failure of the one message it concerns."""
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
        """Parse and key each message, look the batch up in one store read, and decide
        what happens to each: (held, kind, result), where (RESULT, None) means "run it".
        Nothing is counted yet: an attempt counts when it fails (or crashes alone)."""
        decided: list[tuple[Held, str, Result | None]] = []
        looked: list[tuple[Held, str | None]] = []  # (held, error if unreadable)
        for held in batch:
            try:
                looked.append((held, self._read(held)))
            except BaseException as exc:  # noqa: B902 - a bug here fails this message only
                decided.append(self._broken(held, "reading it", exc))
        attempts = self._look_up([h for h, _ in looked])
        now = time.time()
        for (held, error), attempt in zip(looked, attempts):
            try:
                decided.append(self._decide(held, error, attempt, now))
            except BaseException as exc:  # noqa: B902
                decided.append(self._broken(held, "deciding on it", exc))
        return decided

    def _read(self, held: Held) -> str | None:
        """Parse and key one message; returns why it is not an event, or None."""
        message = held.message
        held.key = message_key(message.id)
        body = message.body
        wrapped = unwrap(body)
        if wrapped is not None:  # a long deferral, re-sent (deferred.py): its own key travels
            held.wrapped, held.key, body = wrapped, wrapped.key, wrapped.body
        try:
            held.event = parse_event(body)
        except InvalidEvent as exc:
            return str(exc)
        except BaseException as exc:  # noqa: B902 - the parser choked on this body: it is poison
            return f"body cannot be parsed: {one_line(exc)}"
        if wrapped is None:
            held.key = event_key(held.event)
        return None

    def _look_up(self, batch: list[Held]) -> list[Attempt | None]:
        """One store read for the batch; if that fails, one per message (None: unknown)."""
        if not batch:
            return []
        keys = [h.key for h in batch]
        try:
            return list(self.store.take(keys, self.max_attempts))
        except BaseException as exc:  # noqa: B902
            log.error("state store: %s; looking the %d message(s) up one by one", one_line(exc), len(keys))
        out: list[Attempt | None] = []
        for key in keys:
            try:
                out.extend(self.store.take([key], self.max_attempts))
            except BaseException:  # noqa: B902 - degrade: MNS's DequeueCount stands in for ours
                out.append(None)
        return out

    def _decide(self, held: Held, error: str | None, attempt: Attempt | None,
                now: float) -> tuple[Held, str, Result | None]:
        if attempt is not None and attempt.settled:  # a redelivered copy (a lost delete)
            return held, DUPLICATE, None
        if error is not None:
            return held, RESULT, invalid(error)
        wrapped = held.wrapped
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
            held.resume = wrapped.resume
        held.attempt = made if exhausted else made + 1
        if exhausted:  # e.g. it crashed the worker every time
            return held, EXHAUSTED, None
        if wrapped is not None and wrapped.until - now > 1:  # re-sent early (a wait over 7 days)
            return held, WAIT, None
        return held, RESULT, None

    def _broken(self, held: Held, doing: str, exc: BaseException) -> tuple[Held, str, Result | None]:
        """A bug met while taking one message on: that message fails (and, failing every
        time, is dead-lettered after `max_attempts` by its DequeueCount)."""
        log.error("message %s: %s failed: %s", held.message.id, doing, one_line(exc),
                  exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
        held.attempt = max(held.attempt, held.message.dequeue_count)
        return held, RESULT, Result(FAILED, held.event, error=f"{doing} failed: {one_line(exc)}")

    # == handle ====================================================================
    def _handle(self, held: Held) -> None:
        entered = attached = False
        try:
            if self._stopping.is_set() or not self._gate.enter(held.suspect, self._stopping):
                self.settler.put(held, RELEASE)  # received but not started: another worker's
                return
            entered = True
            assert self._journal is not None
            self._journal.started(held.key)
            future = self.dispatcher.start(held.event, held.resume)
            attached = True
            future.add_done_callback(lambda f: self._done(held, f))
        except BaseException as exc:  # noqa: B902 - a bug here must not leak the message or the slot
            log.error("handling message %s failed: %s", held.message.id, one_line(exc), exc_info=exc)
            if entered and not attached:
                self._ended(held)
            if not attached:
                self.settler.put(held, RESULT, Result(FAILED, held.event, error=one_line(exc)))
        finally:
            with self._room:
                self._busy -= 1
                self._room_opened()

    def _done(self, held: Held, future: Future) -> None:
        """The outcome is in (on whichever thread resolved it): never raise from here."""
        try:
            result = _result(future, held)
        except BaseException as exc:  # noqa: B902
            result = Result(FAILED, held.event, error=one_line(exc))
        try:
            self._ended(held)
        finally:
            self.settler.put(held, RESULT, result)

    def _ended(self, held: Held) -> None:
        try:
            if self._journal is not None:
                self._journal.ended(held.key)
        except BaseException as exc:  # noqa: B902 - e.g. a full disk: the message still settles
            log.error("crash journal: %s", one_line(exc))
        finally:
            self._gate.leave(held.suspect)

    def _archive(self, batch: list[Held]) -> None:
        path = self.config.worker.archive
        if not path:
            return
        text = "".join(h.message.body.decode("utf-8", "replace").strip().replace("\r", "")
                       .replace("\n", " ") + "\n" for h in batch)
        try:  # only the receive thread writes; 0600 like every file in state_dir
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, text.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("archive %s: %s", path, exc.strerror)

    # == extend ====================================================================
    def _extend_loop(self) -> None:
        next_recover = time.monotonic() + RECOVER_EVERY
        while not self._closing.wait(EXTEND_EVERY):
            now = time.monotonic()
            if now >= next_recover:  # a sibling worker on this host may have died
                self._recover()
                next_recover = now + RECOVER_EVERY
            with self._room:
                due = [h for h in self._held.values() if h.extend_at <= now]
            for held in due:
                if self._closing.is_set():
                    return
                try:
                    self._extend(held)
                except Exception as exc:  # a bug must not end extending for every message
                    log.error("extending message %s failed: %s", held.message.id, one_line(exc))

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
        return Result(FAILED, held.event, error=one_line(exc))
    return future.result()


# == entry point =====================================================================
def main(args) -> int:
    """`ecs-worker run -c CONFIG [--dry-run]`: 0 after a clean stop, 2 for configuration."""
    from .cli import _setup
    from .credentials import credentials_provider

    try:
        config, plugins, runtime = _setup(args, dry_run=getattr(args, "dry_run", False))
        check_runnable(config)
        provider = credentials_provider(config.credentials)
        store = Store(config.worker.state_dir, config.worker.dedupe_ttl)
    except (ConfigError, StoreError) as exc:
        return _fail(exc)
    metrics.watch_gateway(runtime.gateway)
    metrics.known_labels([name for name, _ in plugins.pm.list_name_plugin()])
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
