"""The MNS XML wire format (namespace http://mns.aliyuncs.com/doc/v1/) the `mns` SDK speaks: the
bodies the emulator answers with, and the request bodies it parses.

Ranges are enforced as documented (400 `InvalidArgument`, "The value of X should between lo and
hi"): ChangeMessageVisibility VisibilityTimeout 1..43200, waitseconds 0..30, numOfMessages 1..16,
DelaySeconds 0..604800, Priority 1..16, and a body of at most the queue's MaximumMessageSize bytes.
"""
from __future__ import annotations

import re
from xml.etree import ElementTree

from .mns_errors import MnsErrorResponse, int_arg, invalid_argument
from .mns_queue import ATTRIBUTES, MAX_BATCH, Message, Queue, now_ms

XMLNS = "http://mns.aliyuncs.com/doc/v1/"
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'

def parse_queue_attributes(body: bytes) -> dict:
    """A `<Queue>` body -> {XML name: value}, each range-checked (an empty body sets nothing)."""
    if not body.strip():
        return {}
    root = parse_xml(body)
    if _local(root.tag) != "Queue":
        raise MnsErrorResponse(400, "MalformedXML", "The XML you provided was not well-formed.")
    out: dict = {}
    for c in root:
        name, text = _local(c.tag), (c.text or "").strip()
        if name not in ATTRIBUTES:
            raise invalid_argument(f"Unknown queue attribute {name}.")
        if name == "LoggingEnabled":
            if text.lower() not in ("true", "false"):
                raise invalid_argument("The value of LoggingEnabled should be True or False.")
            out[name] = text.lower() == "true"
        else:
            out[name] = int_arg(text, name, ATTRIBUTES[name][1], ATTRIBUTES[name][2])
    return out


def check_queue_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,119}", name):
        raise MnsErrorResponse(400, "InvalidQueueName", "The queue name you provided is not valid: it must start with "
                                                "a letter and hold at most 120 letters, digits or '-'.")


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
    """results: Message, or MnsErrorResponse for a message that was refused."""
    inner = []
    for r in results:
        if isinstance(r, MnsErrorResponse):
            inner.append(f"<Message><ErrorCode>{r.code}</ErrorCode><ErrorMessage>{esc(r.message)}"
                         f"</ErrorMessage></Message>")
        else:
            inner.append(f"<Message><MessageId>{r.id}</MessageId><MessageBodyMD5>{r.md5}</MessageBodyMD5>"
                         f"</Message>")
    return f'{XML_HEAD}<Messages xmlns="{XMLNS}">{"".join(inner)}</Messages>'.encode("utf-8")


def xml_change_visibility(handle: str, m: Message) -> bytes:
    return (f'{XML_HEAD}<ChangeVisibility xmlns="{XMLNS}"><ReceiptHandle>{handle}</ReceiptHandle>'
            f"<NextVisibleTime>{now_ms(m.visible_at)}</NextVisibleTime></ChangeVisibility>").encode("utf-8")


def xml_delete_errors(errors: list[tuple[str, MnsErrorResponse]]) -> bytes:
    inner = "".join(f"<Error><ErrorCode>{e.code}</ErrorCode><ErrorMessage>{esc(e.message)}</ErrorMessage>"
                    f"<ReceiptHandle>{esc(h)}</ReceiptHandle></Error>" for h, e in errors)
    return f'{XML_HEAD}<Errors xmlns="{XMLNS}">{inner}</Errors>'.encode("utf-8")


def xml_attributes(q: Queue) -> bytes:
    d = q.depths()
    fields = {
        "QueueName": q.name, "CreateTime": q.created, "LastModifyTime": q.modified,
        "VisibilityTimeout": q.visibility_timeout, "MaximumMessageSize": q.maximum_message_size,
        "MessageRetentionPeriod": q.message_retention_period, "DelaySeconds": q.delay_seconds,
        "PollingWaitSeconds": q.polling_wait_seconds, "ActiveMessages": d["visible"],
        "InactiveMessages": d["in_flight"], "DelayMessages": d["delayed"],
        "LoggingEnabled": "True" if q.logging_enabled else "False",
    }
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'{XML_HEAD}<Queue xmlns="{XMLNS}">{inner}</Queue>'.encode("utf-8")


def xml_error(e: MnsErrorResponse, request_id: str, host_id: str) -> bytes:
    return (f'{XML_HEAD}<Error xmlns="{XMLNS}"><Code>{e.code}</Code><Message>{esc(e.message)}</Message>'
            f"<RequestId>{request_id}</RequestId><HostId>{esc(host_id)}</HostId></Error>").encode("utf-8")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_xml(body: bytes) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise MnsErrorResponse(400, "MalformedXML", "The XML you provided was not well-formed.") from None


def parse_send(elem: ElementTree.Element) -> dict:
    """A <Message> element -> {"body", "delay_seconds", "priority"} (validated ranges)."""
    fields = {_local(c.tag): (c.text or "") for c in elem}
    out = {"body": fields.get("MessageBody"), "delay_seconds": None, "priority": None}
    if "DelaySeconds" in fields:
        out["delay_seconds"] = int_arg(fields["DelaySeconds"], "DelaySeconds", 0, 604800)
    if "Priority" in fields:
        out["priority"] = int_arg(fields["Priority"], "Priority", 1, 16)
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
    raise MnsErrorResponse(400, "MalformedXML", "The XML you provided was not well-formed.")


def parse_receipt_handles(body: bytes) -> list[str]:
    root = parse_xml(body)
    handles = [(c.text or "").strip() for c in root if _local(c.tag) == "ReceiptHandle"]
    if not 1 <= len(handles) <= MAX_BATCH:
        raise invalid_argument(f"The count of receipt handle should between 1 and {MAX_BATCH}.")
    return handles

