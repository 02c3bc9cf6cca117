"""One target's bounded queue and the single thread that posts it, with retries."""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import Any

from ecs_worker import backoff_delay, counter

from .config import Config, Target
from .http_post import post
from .render import render

log = logging.getLogger("ecs_worker.plugin.webhook")

MAX_BACKOFF = 60.0  # one notification never waits longer than this between tries
WARNING_INTERVAL = 30.0  # per target and kind: a dead receiver under load must not flood the log
NOTIFICATIONS = counter("ecs_worker_webhook_notifications", "Webhook notifications by target and "
                        "result (sent, failed after retries, dropped)", ["target", "result"])


class Sender(threading.Thread):
    """One target's queue and its single sender thread.

    One thread per target keeps a dead receiver from delaying the others and keeps
    notifications in order; parallel posts would only trip the receivers' rate limits
    (a DingTalk robot takes 20 messages a minute).

    When the queue is full the *oldest* notification is dropped: by then the receiver
    has been failing for a while, and the newest notifications describe the fleet as
    it is now, which is what someone reading them after the outage needs.
    """

    def __init__(self, index: int, target: Target, cfg: Config) -> None:
        super().__init__(name=f"webhook-{index}", daemon=True)  # never blocks process exit
        self.index, self.target, self.cfg = index, target, cfg
        self.counts = collections.Counter(sent=0, failed=0, dropped=0)
        for result in ("sent", "failed", "dropped"):  # start at 0, so increase() sees the first
            NOTIFICATIONS.labels(target.label, result)
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._finishing = False
        self._abandoned = threading.Event()
        self._last_warning: dict[str, float] = {}
        self._held_back = collections.Counter()
        self._warn_lock = threading.Lock()

    def put(self, payload: dict[str, Any]) -> None:
        with self._cond:
            if self._abandoned.is_set():
                self._dropped(1, "the worker is shutting down")
                return
            if len(self._queue) >= self.cfg.queue_size:
                self._queue.popleft()
                self._dropped(1, f"queue full ({self.cfg.queue_size}), oldest dropped")
            self._queue.append(payload)
            self._cond.notify()

    def finish(self) -> None:
        """Stop when the queue is empty."""
        with self._cond:
            self._finishing = True
            self._cond.notify()

    def abandon(self) -> None:
        """Give up on what is left: cut backoff waits short, drop the queue."""
        self._abandoned.set()
        with self._cond:
            self._finishing = True
            left = len(self._queue)
            self._queue.clear()
            self._cond.notify()
        if left:
            self._dropped(left, "not sent before the shutdown deadline")

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._finishing:
                    self._cond.wait()
                if not self._queue:
                    return
                payload = self._queue.popleft()
            self._send(payload)

    def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(render(self.target.format, payload), default=str).encode()
        why = ""
        for attempt in range(self.cfg.retries + 1):
            verdict = post(self.target, body, self.cfg.timeout)
            if verdict.ok:
                self.counts["sent"] += 1
                NOTIFICATIONS.labels(self.target.label, "sent").inc()
                log.debug("webhook %s: sent %s", self.target.label, payload["id"])
                return
            why = verdict.detail
            if not verdict.retryable or attempt == self.cfg.retries:
                break
            delay = verdict.retry_after if verdict.retry_after is not None \
                else backoff_delay(attempt, self.cfg.backoff, MAX_BACKOFF, jitter="up")
            log.debug("webhook %s: try %d failed (%s); again in %.2gs", self.target.label,
                      attempt + 1, why, delay)
            if self._abandoned.wait(min(delay, MAX_BACKOFF)):
                why += " (shutting down)"
                break
        self.counts["failed"] += 1
        NOTIFICATIONS.labels(self.target.label, "failed").inc()
        self._warn("failed", "webhook %s: gave up on the notification for %s after %d tries: %s "
                   "(%d failed so far)", self.target.label, payload["id"] or "an invalid message",
                   attempt + 1, why, self.counts["failed"])

    def _dropped(self, n: int, why: str) -> None:
        self.counts["dropped"] += n
        NOTIFICATIONS.labels(self.target.label, "dropped").inc(n)
        self._warn("dropped", "webhook %s: notification dropped: %s (%d dropped so far)",
                   self.target.label, why, self.counts["dropped"])

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """At most one warning of a kind per interval; the next says how many were held back."""
        with self._warn_lock:
            now = time.monotonic()
            if now - self._last_warning.get(kind, float("-inf")) < WARNING_INTERVAL:
                self._held_back[kind] += 1
                return
            self._last_warning[kind] = now
            held, self._held_back[kind] = self._held_back[kind], 0
        log.warning(message + (f"; {held} similar warnings held back" if held else ""), *args)
