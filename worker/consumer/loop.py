"""`ecs-worker run`: the at-least-once MNS consumer.

Its loops run in threads of their own (those calling MNS each with its own client).
Receive (here; the watchdog's heartbeat) long-polls a batch only while there is room
(`room.py`) — fewer than `concurrency` handlers busy, fewer than `max_pending` messages
held (fewer still when MNS is slow: no more than renewals can keep hidden), fewer than
three batches not yet decided on — and holds it from receipt. With a shared store it
hands the batch to admit (`admitting.py`), which decides on each message (`admission.py`,
the store step: a network round trip) while the next receive is under way; with the local
store it decides itself. Each message goes to the handler pool or the settler. Extend
(`extender.py`) keeps held messages invisible. Settle (`settle.py`) carries out each
outcome in MNS; it remembers settled keys in the store, then hands their deletes to
settle-deletes (`deletes.py`) and goes on while they are deleted. Recover (`crashes.py`)
looks every 30 s for the crash journals of dead sibling workers. The runtime is built in
`app.py`; signals in `signals.py`; the archive in `archive.py`.

The main thread only waits for signals (`signals.py`: SIGHUP reloads). First SIGTERM/SIGINT:
stop receiving (a long poll under way is abandoned, `receiving.py`), release messages not
yet started — waiting for admit or for a handler — (visibility 1 s), let the rest finish
within `shutdown_timeout`, settle, exit 0. A second signal exits at once; unsettled
messages reappear after their visibility timeout, so nothing is lost either way.

Whatever goes wrong between receive and settle is one message's failure, never its
batch's: each message is parsed, keyed and looked up on its own terms. Any internal
thread that dies (receive, admit, extend, settle, settle-deletes, recover, a handler, the
dispatcher's deadlines) stops the worker loudly: logged, `/healthz` 503, no more watchdog
pings, exit 1 — the service manager restarts it. Crash isolation (`crashes.py`): a
journal of running messages finds the one that kills the process. See docs/reliability.md.
"""
from __future__ import annotations

import logging
import threading
import time

from . import archive, preflight
from ..observability import health, metrics
from .admission import Admission, claim_seconds
from .admitting import READ_AHEAD_BATCHES, Admitting
from ..config import Config
from .crashes import keep_recovering, recover
from ..plugin_host.dispatch import Dispatcher
from .extender import Extender
from .handling import Handling
from .pool import Handlers
from .room import Room
from ..observability.notify import SystemdNotifier, watchdog_interval
from ..exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_STUCK, EXIT_USAGE
from .receiving import Receiving
from .settle import Settler
from .signals import Signals
from ..queue.source import MnsError, MnsQueue, Message, fault_delay
from ..state.store import Store, StoreError
from .stuck import StuckWatch
from .thread_watch import ThreadWatch

log = logging.getLogger("ecs_worker.runner")

STATUS_EVERY = 1.0  # seconds between status lines to systemd (only when they change)


class Runner(ThreadWatch):
    def __init__(self, config: Config, dispatcher: Dispatcher, source: MnsQueue, store: Store,
                 dead_letters: MnsQueue | None = None, notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.source = source
        self.store = store
        self.dead_letters = dead_letters
        self.notifier = notifier or SystemdNotifier("")
        w = config.worker
        self.concurrency, self.max_pending = w.concurrency, w.max_pending
        self.queue_visibility = config.mns.visibility_timeout  # replaced by the queue's own at start
        self.signals = Signals()
        self._stopping = threading.Event()  # stop receiving
        self._closing = threading.Event()  # stop extending and settling
        self.settler = Settler(config, source, store, dispatcher.runtime.signer, dispatcher.run_on_settled,
                               lambda *done: self._room.finish(*done), dead_letters)
        self.counts = self.settler.counts
        self._extender = Extender(source, config.mns.visibility_timeout, lambda now: self._room.due(now),
                                  self._closing)
        self._room = Room(w.concurrency, w.max_pending, self._extender.capacity,
                          READ_AHEAD_BATCHES * config.mns.batch_size)
        self._held = self._room.held
        self._threads: list[threading.Thread] = []
        self._receiving = Receiving(source, config.mns.wait_seconds, config.mns.gather_seconds,
                                    self._stopping)
        self._handling = Handling(dispatcher, self.settler, self._stopping, self._room)
        # The pool runs the handling straight; it calls back only when one of its threads dies.
        self._pool = Handlers(w.concurrency, self._handling.run, on_death=self._died)
        self._admitting = Admitting(Admission(store, w.max_attempts, claim_seconds(config, store), self.settler.signer),
                                    self.settler, self._room, self._pool.submit, self._stopping)
        self.fatal: str | None = None  # the internal thread that died, if one did
        p = config.plugins
        self._stuck = StuckWatch(dispatcher.stuck, p.stuck_health_seconds, p.stuck_exit_seconds)
        self.on_reload = lambda: None  # SIGHUP (set by app.py: reload.py)
        self.refused: MnsError | None = None  # RAM refused the first receive: exit 2

    # == life cycle ================================================================
    def check(self) -> None:
        """Prove the queues exist and the keys work: permanent errors raise `MnsError`,
        transient ones are retried (a signal meanwhile raises a non-permanent one). The
        renewals' first round trip is the quicker of the two calls after the first: the
        first also loads the SDK, builds the client and connects (and may wait out
        retries), which no renewal pays; counted, it capped what the worker holds."""
        def until_ok(call):
            return preflight.until_ok(call, self.notifier, lambda: bool(self.signals.count))

        def timed(call):
            def attempt():
                started = time.monotonic()
                value = call()
                round_trips.append(time.monotonic() - started)
                return value
            return attempt

        round_trips: list[float] = []
        self.queue_visibility = until_ok(self.source.visibility_timeout)
        self._extender.queue_visibility = self.queue_visibility
        until_ok(timed(self.source.prove_delete))  # a delete RAM refuses stops us now (exit 2), not after work
        self.settler.source_max_size = until_ok(timed(self.source.maximum_message_size))
        self._extender.observe(min(round_trips))
        if self.dead_letters is not None:
            self.settler.dead_letter_max_size = until_ok(self.dead_letters.maximum_message_size)

    def start(self) -> None:
        """Recover the journals of dead workers, then start the receive, admit (with a
        shared store), extend, settle, settle-deletes and recover loops and the handlers."""
        self._handling.open(self.config.worker.state_dir)
        self._recover()
        self._pool.start()
        loops = [("receive", self._receive_loop)]  # first: `drain` looks at it
        if self._admitting.threaded:
            loops.append(("admit", self._admitting.loop))
        loops += [("extend", self._extender.loop), ("settle", self.settler.loop),
                  ("settle-deletes", self.settler.deletes.loop),
                  ("recover", lambda: keep_recovering(self._recover, self._closing))]
        for name, target in loops:
            t = threading.Thread(target=self._guarded(name, target), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _recover(self) -> None:
        """Suspects and charges from the journals of workers that died (`crashes.py`)."""
        try:
            recover(self.config.worker.state_dir, self.store.crashed, own=self._handling.journal)
        except (OSError, StoreError) as exc:
            log.error("crash journals in %s: %s", self.config.worker.state_dir, exc)

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            held = len(self._held)
            log.info("stopping: no more receiving; %d message(s) in flight", held)
            self.notifier.stopping(f"stopping, {held} in flight")
            self._stopping.set()
            self._room.wake()

    def drain(self, timeout: float) -> bool:
        """After `request_stop`: wait for in-flight work, settle, stop the loops.

        Returns False when messages were still in flight at the deadline (they reappear
        after their visibility timeout).
        """
        deadline = time.monotonic() + timeout
        receiver = self._threads[0] if self._threads else None
        while True:
            self.signals.exit_on_second(len(self._held))
            # A long poll is abandoned, not waited out (`receiving.py`).
            if not self._held and self._receiving.idle(receiver is not None and receiver.is_alive()):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self._receiving.abandon()
        self._closing.set()
        self._admitting.close()
        self.settler.close()
        for t in self._threads[1:]:
            t.join(timeout=10)
        self._pool.shutdown()
        self._handling.close()
        left = len(self._held)
        if left:
            log.warning("%d message(s) still in flight at shutdown: MNS will redeliver them after "
                        "their visibility timeout", left)
        return left == 0

    def serve(self) -> int:
        """After `start`: run until a signal; the main thread only watches the signal flag."""
        while not self.signals.count and self.refused is None:
            self.signals.act(self.on_reload, self.status_line)
            dead, stuck = self._dead_thread(), self._stuck.check()
            if dead or stuck:
                if dead:
                    health.thread_died(dead)
                    log.error("the %s thread died; stopping so that the service manager restarts us", dead)
                else:
                    log.critical("plugin %s: its calls are still stuck after [plugins] stuck_exit_seconds; "
                                 "exiting with code %d so that the service manager restarts the worker",
                                 stuck, EXIT_STUCK)
                self.request_stop()
                self.drain(self.config.worker.shutdown_timeout)
                return EXIT_FAILURE if dead else EXIT_STUCK
            time.sleep(0.1)
        self.request_stop()
        ok = self.drain(self.config.worker.shutdown_timeout)
        if self.refused is not None:
            log.error("%s", self.refused)
            return EXIT_USAGE
        log.info("stopped (%s)%s", self.status_line(), "" if ok else "; some messages left in flight")
        return EXIT_OK

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
            room = self._room.wait(ping_every, self._stopping)
            if not room:
                continue
            asked = min(cfg.batch_size, room)
            try:
                messages = self._receiving.receive(asked)
            except MnsError as exc:
                failures += 1
                metrics.RECEIVE_ERRORS.inc()
                if exc.denied and not ready:  # never received: a policy problem, not an outage
                    self.refused = exc
                    self.request_stop()
                    return
                if exc.denied:
                    health.call_refused("receive", str(exc))
                delay = fault_delay(failures)
                log.warning("%s; retrying in %.1fs", exc, delay)
                self._stopping.wait(delay)
                continue
            failures = 0
            health.call_allowed("receive")
            metrics.poll_completed()
            if not ready:
                ready, next_ping = True, 0.0  # and the watchdog hears from it at once
                log.info("receiving from queue %r (concurrency %d)", self.source.name, self.concurrency)
                self.notifier.ready(self.status_line())
            if messages:
                self._take(messages)
            self._receiving.pause(len(messages), asked, time.monotonic())

    def _take(self, messages: list[Message]) -> None:
        """Hold a received batch (counted from receipt) and have it decided on: by the admit
        thread while this one receives the next (a shared store), or here (`admitting.py`)."""
        fresh = self._room.accept(messages, self.queue_visibility, self._extender.extend_at)
        if not fresh:
            return
        if self.config.worker.archive:  # only the receive thread writes it
            archive.append(self.config.worker.archive, (h.message.body for h in fresh))
        self._admitting.hand_over(fresh)
