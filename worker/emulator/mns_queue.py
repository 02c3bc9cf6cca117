"""MNS queues: the message model (send, receive, hide, delete, change visibility).
Its error replies are in mns_errors.py, the XML wire format in mns_xml.py, the request router in mns.py.

Semantics kept faithful because the worker's correctness depends on them:
- receive hides a message for the queue's VisibilityTimeout and issues a fresh receipt handle;
  when the timeout passes the message is visible again (DequeueCount grows on redelivery);
- long polling sleeps on a Condition until a message becomes visible or `waitseconds` pass;
  an empty poll is HTTP 404 `MessageNotExist`;
- ChangeMessageVisibility issues a new handle, and the old one is dead.

Receipt-handle errors (also in batch delete's `<Errors>`), as MNS's error-code table and its
"message not exist appears when you delete a message" page describe them:
- a handle that does not decode, or names another queue's message -> 400 `ReceiptHandleError`;
- a handle whose message was deleted                               -> 404 `MessageNotExist`;
- a handle that is no longer current: the message became visible
  again (its invisibility expired), or a later receive or
  ChangeMessageVisibility superseded it                             -> 404 `MessageNotExist`.
Handles are base64 and may contain `+` and `/`: the SDK puts them in the query unencoded.

All methods of `Queue` must be called with the emulator's lock held (its `cond` wraps it).
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import os
import struct
import threading
import time

from .mns_errors import MnsErrorResponse, invalid_argument, message_not_exist, receipt_handle_error

MAX_BATCH = 16
MAX_WAIT_SECONDS = 30
MIN_VISIBILITY, MAX_VISIBILITY = 1, 43200  # ChangeMessageVisibility's documented range (seconds)
DEFAULT_PRIORITY = 8
RETENTION_SECONDS = 345600
DELETED_MEMORY = 100_000

# Queue attributes a CreateQueue / SetQueueAttributes body may set: XML name -> (attribute, lo, hi),
# ranges from MNS's CreateQueue reference (help/en/mns/developer-reference/createqueue).
ATTRIBUTES = {
    "DelaySeconds": ("delay_seconds", 0, 604800),
    "MaximumMessageSize": ("maximum_message_size", 1024, 65536),
    "MessageRetentionPeriod": ("message_retention_period", 60, 604800),
    "VisibilityTimeout": ("visibility_timeout", 1, 43200),
    "PollingWaitSeconds": ("polling_wait_seconds", 0, 30),
    "LoggingEnabled": ("logging_enabled", 0, 0),
}


def now_ms(t: float | None = None) -> int:
    return int((time.time() if t is None else t) * 1000)


class Message:
    __slots__ = ("seq", "id", "body", "md5", "priority", "enqueue_t", "first_dequeue_t", "dequeue_count",
                 "visible_at", "gen", "salt")

    def __init__(self, seq: int, body: str, priority: int, enqueue_t: float, visible_at: float):
        self.seq = seq
        self.id = "%016X-%X-%X" % (int.from_bytes(os.urandom(8), "big"), seq, now_ms(enqueue_t))
        self.body = body
        self.md5 = hashlib.md5(body.encode("utf-8")).hexdigest().upper()
        self.priority = priority
        self.enqueue_t = enqueue_t
        self.first_dequeue_t: float | None = None
        self.dequeue_count = 0
        self.visible_at = visible_at
        self.gen = 0  # bumps on every receive / visibility change: older handles die
        self.salt = os.urandom(4)

    def handle(self) -> str:
        raw = struct.pack(">QI", self.seq, self.gen) + self.salt
        return "1-" + base64.b64encode(raw).decode("ascii")


def decode_handle(handle: str) -> tuple[int, int, bytes] | None:
    if not handle.startswith("1-"):
        return None
    try:
        raw = base64.b64decode(handle[2:], validate=True)
    except (ValueError, TypeError):
        return None
    if len(raw) != 16:
        return None
    seq, gen = struct.unpack(">QI", raw[:12])
    return seq, gen, raw[12:]


class Queue:
    """One queue. `ready` holds visible messages by (priority, seq); `timers` holds hidden ones by time.

    Heap entries carry the message's `gen` at push time; entries whose gen is stale are skipped
    (lazy deletion keeps every operation O(log n))."""

    _seq = itertools.count(1)

    def __init__(self, cfg: dict, lock: threading.Lock):
        self.name: str = cfg["name"]
        self.visibility_timeout: int = cfg.get("visibility_timeout", 30)
        self.delay_seconds: int = cfg.get("delay_seconds", 0)
        self.maximum_message_size: int = cfg.get("maximum_message_size", 65536)
        self.polling_wait_seconds: int = cfg.get("polling_wait_seconds", 0)
        self.message_retention_period: int = RETENTION_SECONDS
        self.logging_enabled = False
        self.created = self.modified = int(time.time())
        self.cond = threading.Condition(lock)
        self.msgs: dict[int, Message] = {}
        self.ready: list = []   # (priority, seq, gen)
        self.timers: list = []  # (visible_at, seq, gen)
        self.deleted: dict[int, bytes] = {}
        self.closing = False
        with self.cond:
            for m in cfg.get("messages", []):
                self.send(m["body"], m["delay_seconds"], m["priority"])

    # ----------------------------------------------------------------- internals

    def _promote(self, now: float) -> None:
        """Move messages whose hidden time is over into `ready`."""
        timers, msgs = self.timers, self.msgs
        while timers and timers[0][0] <= now:
            _, seq, gen = heapq.heappop(timers)
            m = msgs.get(seq)
            if m is not None and m.gen == gen:
                heapq.heappush(self.ready, (m.priority, seq, gen))

    def _pop_ready(self) -> Message | None:
        ready, msgs = self.ready, self.msgs
        while ready:
            _, seq, gen = heapq.heappop(ready)
            m = msgs.get(seq)
            if m is not None and m.gen == gen:
                return m
        return None

    def _next_timer(self) -> float | None:
        timers, msgs = self.timers, self.msgs
        while timers:
            _, seq, gen = timers[0]
            m = msgs.get(seq)
            if m is not None and m.gen == gen:
                return timers[0][0]
            heapq.heappop(timers)
        return None

    def _hide(self, m: Message, until: float) -> None:
        m.gen += 1
        m.visible_at = until
        heapq.heappush(self.timers, (until, m.seq, m.gen))

    def _lookup(self, handle: str, now: float) -> Message:
        parsed = decode_handle(handle)
        if parsed is None:
            raise receipt_handle_error()
        seq, gen, salt = parsed
        m = self.msgs.get(seq)
        if m is None:
            if self.deleted.get(seq) == salt:
                raise message_not_exist()
            raise receipt_handle_error()  # never this queue's message
        if m.salt != salt:
            raise receipt_handle_error()
        if m.gen != gen or m.visible_at <= now:
            raise message_not_exist()  # expired or superseded: the real service says "message not exist"
        return m

    # ----------------------------------------------------------------- operations

    def check_body(self, body: str | None) -> str:
        if not body:
            raise invalid_argument("The XML you provided did not validate against our published schema, "
                                   "cause by MessageBody.")
        if len(body.encode("utf-8")) > self.maximum_message_size:
            raise invalid_argument(f"The value of MessageBody should between 1 and "
                                   f"{self.maximum_message_size} bytes.")
        return body

    def send(self, body: str, delay_seconds: int | None = None, priority: int | None = None) -> Message:
        now = time.time()
        delay = self.delay_seconds if delay_seconds is None else delay_seconds
        m = Message(next(Queue._seq), body, priority or DEFAULT_PRIORITY, now, now + delay)
        self.msgs[m.seq] = m
        if delay > 0:
            heapq.heappush(self.timers, (m.visible_at, m.seq, m.gen))
        else:
            heapq.heappush(self.ready, (m.priority, m.seq, m.gen))
        self.cond.notify_all()
        return m

    def receive(self, n: int, wait_seconds: float) -> list[tuple[Message, str]]:
        """Take up to n visible messages, waiting (without spinning) up to wait_seconds for the first."""
        deadline = time.time() + wait_seconds
        while True:
            now = time.time()
            self._promote(now)
            got = []
            while len(got) < n:
                m = self._pop_ready()
                if m is None:
                    break
                if m.first_dequeue_t is None:
                    m.first_dequeue_t = now
                m.dequeue_count += 1
                self._hide(m, now + self.visibility_timeout)
                got.append((m, m.handle()))
            if got or now >= deadline or self.closing:
                return got
            wake = deadline
            nxt = self._next_timer()
            if nxt is not None and nxt < wake:
                wake = nxt
            self.cond.wait(max(0.0, wake - now) + 0.001)

    def peek(self, n: int) -> list[Message]:
        self._promote(time.time())
        entries = heapq.nsmallest(n * 2 + 16, self.ready)
        out, seen = [], set()
        for _, seq, gen in entries:
            m = self.msgs.get(seq)
            if m is not None and m.gen == gen and seq not in seen:
                seen.add(seq)
                out.append(m)
                if len(out) == n:
                    break
        return out

    def delete(self, handle: str) -> None:
        m = self._lookup(handle, time.time())
        del self.msgs[m.seq]
        # Remember recent deletions so a late handle gets MessageNotExist, not ReceiptHandleError.
        self.deleted[m.seq] = m.salt
        if len(self.deleted) > DELETED_MEMORY:
            del self.deleted[next(iter(self.deleted))]

    def change_visibility(self, handle: str, timeout: int) -> tuple[Message, str]:
        now = time.time()
        m = self._lookup(handle, now)
        self._hide(m, now + timeout)
        return m, m.handle()

    def depths(self) -> dict:
        now = time.time()
        visible = in_flight = delayed = 0
        for m in self.msgs.values():
            if m.visible_at <= now:
                visible += 1
            elif m.dequeue_count:
                in_flight += 1
            else:
                delayed += 1
        return {"visible": visible, "in_flight": in_flight, "delayed": delayed}

    # ----------------------------------------------------------------- attributes (CreateQueue / SetQueueAttributes)

    def same_attributes(self, attrs: dict) -> bool:
        return all(getattr(self, ATTRIBUTES[k][0]) == v for k, v in attrs.items())

    def apply_attributes(self, attrs: dict) -> None:
        for k, v in attrs.items():
            setattr(self, ATTRIBUTES[k][0], v)
        self.modified = int(time.time())

    def close(self) -> None:
        self.closing = True
        self.cond.notify_all()


