"""The MNS request router: which action an HTTP request is (`route`) and running it on a queue
(`execute`). The queue model is in mns_queue.py, the XML bodies in mns_xml.py."""
from __future__ import annotations

from urllib.parse import unquote

from .mns_errors import MnsErrorResponse, int_arg, message_not_exist
from .mns_queue import MAX_BATCH, MAX_VISIBILITY, MAX_WAIT_SECONDS, MIN_VISIBILITY, Queue
from .mns_xml import (parse_queue_attributes, parse_receipt_handles, parse_send_body, xml_attributes,
                      xml_batch_sent, xml_change_visibility, xml_delete_errors, xml_message, xml_messages,
                      xml_sent)



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
        if method == "PUT":
            return ("SetQueueAttributes" if query.get("metaoverride") == "true" else "CreateQueue"), parts[1]
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
    """Run one MNS action on `queue` (lock held); return (HTTP status, XML body) or raise MnsErrorResponse."""
    if action == "GetQueueAttributes":
        return 200, xml_attributes(queue)
    if action == "SetQueueAttributes":
        queue.apply_attributes(parse_queue_attributes(body))
        return 204, b""
    if action in ("SendMessage", "BatchSendMessage"):
        is_batch, items = parse_send_body(body)
        if not is_batch:
            m = items[0]
            return 201, xml_sent(queue.send(queue.check_body(m["body"]), m["delay_seconds"], m["priority"]))
        results: list = []
        for m in items:
            try:
                results.append(queue.send(queue.check_body(m["body"]), m["delay_seconds"], m["priority"]))
            except MnsErrorResponse as e:
                results.append(e)
        failed = any(isinstance(r, MnsErrorResponse) for r in results)
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
            except MnsErrorResponse as e:
                errors.append((h, e))
        return (404, xml_delete_errors(errors)) if errors else (204, b"")
    if action == "ChangeMessageVisibility":
        if "VisibilityTimeout" not in query:
            raise MnsErrorResponse(400, "MissingVisibilityTimeout", "VisibilityTimeout is required.")
        timeout = int_arg(query["VisibilityTimeout"], "VisibilityTimeout", MIN_VISIBILITY, MAX_VISIBILITY)
        m, handle = queue.change_visibility(query["ReceiptHandle"], timeout)
        return 200, xml_change_visibility(handle, m)
    raise MnsErrorResponse(400, "InvalidRequestURL", "Http request URL format invalid (not implemented by the emulator).")
