"""MNS queues: message semantics and the XML wire format the `mns` SDK (aliyun-mns-sdk) speaks.

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

Ranges are enforced as documented (400 `InvalidArgument`, "The value of X should between lo and
hi"): ChangeMessageVisibility VisibilityTimeout 1..43200, waitseconds 0..30, numOfMessages 1..16,
DelaySeconds 0..604800, Priority 1..16, and a body of at most the queue's MaximumMessageSize bytes.

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
from urllib.parse import unquote
from xml.etree import ElementTree

XMLNS = "http://mns.aliyuncs.com/doc/v1/"
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_BATCH = 16
MAX_WAIT_SECONDS = 30
MIN_VISIBILITY, MAX_VISIBILITY = 1, 43200  # ChangeMessageVisibility's documented range (seconds)
DEFAULT_PRIORITY = 8
RETENTION_SECONDS = 345600
DELETED_MEMORY = 100_000


class MnsError(Exception):
    """An MNS error response: HTTP status, `<Code>`, `<Message>`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def queue_not_exist(name: str) -> MnsError:
    return MnsError(404, "QueueNotExist", f"The queue name you provided is not exist: {name}.")


def message_not_exist() -> MnsError:
    return MnsError(404, "MessageNotExist", "Message not exist.")


def receipt_handle_error() -> MnsError:
    return MnsError(400, "ReceiptHandleError", "The receipt handle you provided is not valid.")


def invalid_argument(message: str) -> MnsError:
    return MnsError(400, "InvalidArgument", message)


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
        self.visibility_timeout: int = cfg["visibility_timeout"]
        self.delay_seconds: int = cfg["delay_seconds"]
        self.maximum_message_size: int = cfg["maximum_message_size"]
        self.polling_wait_seconds: int = cfg["polling_wait_seconds"]
        self.created = int(time.time())
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

    def close(self) -> None:
        self.closing = True
        self.cond.notify_all()


# --------------------------------------------------------------------- XML


def esc(s: str) -> str:
    # \r must survive: XML parsers normalise a raw CR to LF.
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;"))


def _message_fields(m: Message, handle: str | None) -> str:
    first = m.first_dequeue_t if m.first_dequeue_t is not None else m.enqueue_t
    parts = [f"<MessageId>{m.id}</MessageId>"]
    if handle is not None:
        parts.append(f"<ReceiptHandle>{handle}</ReceiptHandle>")
    parts.append(f"<MessageBodyMD5>{m.md5}</MessageBodyMD5><MessageBody>{esc(m.body)}</MessageBody>"
                 f"<EnqueueTime>{now_ms(m.enqueue_t)}</EnqueueTime>")
    if handle is not None:
        parts.append(f"<NextVisibleTime>{now_ms(m.visible_at)}</NextVisibleTime>")
    parts.append(f"<FirstDequeueTime>{now_ms(first)}</FirstDequeueTime>"
                 f"<DequeueCount>{m.dequeue_count}</DequeueCount><Priority>{m.priority}</Priority>")
    return "".join(parts)


def xml_message(m: Message, handle: str | None) -> bytes:
    return (f'{XML_HEAD}<Message xmlns="{XMLNS}">{_message_fields(m, handle)}</Message>').encode("utf-8")


def xml_messages(items: list[tuple[Message, str | None]]) -> bytes:
    inner = "".join(f"<Message>{_message_fields(m, h)}</Message>" for m, h in items)
    return f'{XML_HEAD}<Messages xmlns="{XMLNS}">{inner}</Messages>'.encode("utf-8")


def xml_sent(m: Message) -> bytes:
    return (f'{XML_HEAD}<Message xmlns="{XMLNS}"><MessageId>{m.id}</MessageId>'
            f"<MessageBodyMD5>{m.md5}</MessageBodyMD5></Message>").encode("utf-8")


def xml_batch_sent(results: list) -> bytes:
    """results: Message, or MnsError for a message that was refused."""
    inner = []
    for r in results:
        if isinstance(r, MnsError):
            inner.append(f"<Message><ErrorCode>{r.code}</ErrorCode><ErrorMessage>{esc(r.message)}"
                         f"</ErrorMessage></Message>")
        else:
            inner.append(f"<Message><MessageId>{r.id}</MessageId><MessageBodyMD5>{r.md5}</MessageBodyMD5>"
                         f"</Message>")
    return f'{XML_HEAD}<Messages xmlns="{XMLNS}">{"".join(inner)}</Messages>'.encode("utf-8")


def xml_change_visibility(handle: str, m: Message) -> bytes:
    return (f'{XML_HEAD}<ChangeVisibility xmlns="{XMLNS}"><ReceiptHandle>{handle}</ReceiptHandle>'
            f"<NextVisibleTime>{now_ms(m.visible_at)}</NextVisibleTime></ChangeVisibility>").encode("utf-8")


def xml_delete_errors(errors: list[tuple[str, MnsError]]) -> bytes:
    inner = "".join(f"<Error><ErrorCode>{e.code}</ErrorCode><ErrorMessage>{esc(e.message)}</ErrorMessage>"
                    f"<ReceiptHandle>{esc(h)}</ReceiptHandle></Error>" for h, e in errors)
    return f'{XML_HEAD}<Errors xmlns="{XMLNS}">{inner}</Errors>'.encode("utf-8")


def xml_attributes(q: Queue) -> bytes:
    d = q.depths()
    fields = {
        "QueueName": q.name, "CreateTime": q.created, "LastModifyTime": q.created,
        "VisibilityTimeout": q.visibility_timeout, "MaximumMessageSize": q.maximum_message_size,
        "MessageRetentionPeriod": RETENTION_SECONDS, "DelaySeconds": q.delay_seconds,
        "PollingWaitSeconds": q.polling_wait_seconds, "ActiveMessages": d["visible"],
        "InactiveMessages": d["in_flight"], "DelayMessages": d["delayed"], "LoggingEnabled": "False",
    }
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'{XML_HEAD}<Queue xmlns="{XMLNS}">{inner}</Queue>'.encode("utf-8")


def xml_error(e: MnsError, request_id: str, host_id: str) -> bytes:
    return (f'{XML_HEAD}<Error xmlns="{XMLNS}"><Code>{e.code}</Code><Message>{esc(e.message)}</Message>'
            f"<RequestId>{request_id}</RequestId><HostId>{esc(host_id)}</HostId></Error>").encode("utf-8")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_xml(body: bytes) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise MnsError(400, "MalformedXML", "The XML you provided was not well-formed.") from None


def parse_send(elem: ElementTree.Element) -> dict:
    """A <Message> element -> {"body", "delay_seconds", "priority"} (validated ranges)."""
    fields = {_local(c.tag): (c.text or "") for c in elem}
    out = {"body": fields.get("MessageBody"), "delay_seconds": None, "priority": None}
    if "DelaySeconds" in fields:
        out["delay_seconds"] = _int_arg(fields["DelaySeconds"], "DelaySeconds", 0, 604800)
    if "Priority" in fields:
        out["priority"] = _int_arg(fields["Priority"], "Priority", 1, 16)
    return out


def parse_send_body(body: bytes) -> tuple[bool, list[dict]]:
    """Returns (is_batch, messages)."""
    root = parse_xml(body)
    if _local(root.tag) == "Messages":
        items = [parse_send(c) for c in root if _local(c.tag) == "Message"]
        if not 1 <= len(items) <= MAX_BATCH:
            raise invalid_argument(f"The count of message should between 1 and {MAX_BATCH}.")
        return True, items
    if _local(root.tag) == "Message":
        return False, [parse_send(root)]
    raise MnsError(400, "MalformedXML", "The XML you provided was not well-formed.")


def parse_receipt_handles(body: bytes) -> list[str]:
    root = parse_xml(body)
    handles = [(c.text or "").strip() for c in root if _local(c.tag) == "ReceiptHandle"]
    if not 1 <= len(handles) <= MAX_BATCH:
        raise invalid_argument(f"The count of receipt handle should between 1 and {MAX_BATCH}.")
    return handles


def _int_arg(value: str | None, name: str, lo: int, hi: int) -> int:
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise invalid_argument(f"The value of {name} should be an integer.") from None
    if not lo <= n <= hi:
        raise invalid_argument(f"The value of {name} should between {lo} and {hi}.")
    return n


int_arg = _int_arg


# --------------------------------------------------------------------- dispatch


def parse_query(query: str) -> dict[str, str]:
    """Split the raw query by hand: receipt handles hold '+', which form decoding would turn into ' '."""
    out = {}
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            out[unquote(k)] = unquote(v)
    return out


def route(method: str, path: str, query: dict[str, str], body: bytes) -> tuple[str, str | None]:
    """(action name, queue name) for an MNS request; action "Unsupported" if the emulator lacks it."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "queues":
        return ("GetQueueAttributes" if method == "GET" else "Unsupported"), parts[1]
    if len(parts) != 3 or parts[0] != "queues" or parts[2] != "messages":
        return "Unsupported", None
    q = parts[1]
    if method == "POST":
        return ("BatchSendMessage" if b"<Messages" in body[:200] else "SendMessage"), q
    if method == "GET":
        batch = "numOfMessages" in query
        if query.get("peekonly", "").lower() == "true":
            return ("BatchPeekMessage" if batch else "PeekMessage"), q
        return ("BatchReceiveMessage" if batch else "ReceiveMessage"), q
    if method == "DELETE":
        return ("DeleteMessage" if "ReceiptHandle" in query else "BatchDeleteMessage"), q
    if method == "PUT" and "ReceiptHandle" in query:
        return "ChangeMessageVisibility", q
    return "Unsupported", q


RECEIVES = ("ReceiveMessage", "BatchReceiveMessage")


def wait_of(queue: Queue, query: dict[str, str]) -> int:
    """A receive's long-poll seconds: `waitseconds`, else the queue's PollingWaitSeconds."""
    if "waitseconds" in query:
        return int_arg(query["waitseconds"], "waitseconds", 0, MAX_WAIT_SECONDS)
    return queue.polling_wait_seconds


def execute(queue: Queue, action: str, query: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Run one MNS action on `queue` (lock held); return (HTTP status, XML body) or raise MnsError."""
    if action == "GetQueueAttributes":
        return 200, xml_attributes(queue)
    if action in ("SendMessage", "BatchSendMessage"):
        is_batch, items = parse_send_body(body)
        if not is_batch:
            m = items[0]
            return 201, xml_sent(queue.send(queue.check_body(m["body"]), m["delay_seconds"], m["priority"]))
        results: list = []
        for m in items:
            try:
                results.append(queue.send(queue.check_body(m["body"]), m["delay_seconds"], m["priority"]))
            except MnsError as e:
                results.append(e)
        failed = any(isinstance(r, MnsError) for r in results)
        return (400 if failed else 201), xml_batch_sent(results)
    if action in ("ReceiveMessage", "BatchReceiveMessage"):
        n = int_arg(query["numOfMessages"], "numOfMessages", 1, MAX_BATCH) if action == "BatchReceiveMessage" else 1
        got = queue.receive(n, wait_of(queue, query))
        if not got:
            raise message_not_exist()
        if action == "ReceiveMessage":
            return 200, xml_message(*got[0])
        return 200, xml_messages(got)
    if action in ("PeekMessage", "BatchPeekMessage"):
        n = int_arg(query["numOfMessages"], "numOfMessages", 1, MAX_BATCH) if action == "BatchPeekMessage" else 1
        found = queue.peek(n)
        if not found:
            raise message_not_exist()
        if action == "PeekMessage":
            return 200, xml_message(found[0], None)
        return 200, xml_messages([(m, None) for m in found])
    if action == "DeleteMessage":
        queue.delete(query["ReceiptHandle"])
        return 204, b""
    if action == "BatchDeleteMessage":
        errors = []
        for h in parse_receipt_handles(body):
            try:
                queue.delete(h)
            except MnsError as e:
                errors.append((h, e))
        return (404, xml_delete_errors(errors)) if errors else (204, b"")
    if action == "ChangeMessageVisibility":
        if "VisibilityTimeout" not in query:
            raise MnsError(400, "MissingVisibilityTimeout", "VisibilityTimeout is required.")
        timeout = int_arg(query["VisibilityTimeout"], "VisibilityTimeout", MIN_VISIBILITY, MAX_VISIBILITY)
        m, handle = queue.change_visibility(query["ReceiptHandle"], timeout)
        return 200, xml_change_visibility(handle, m)
    raise MnsError(400, "InvalidRequestURL", "Http request URL format invalid (not implemented by the emulator).")
