"""The dead-letter queue's message: the raw body plus why, as one ASCII JSON object that
always fits the queue's maximum message size, whatever the body."""
from __future__ import annotations

import base64
import hashlib
import json
import zlib
from typing import Any, Mapping

from .source import MAX_MESSAGE_BYTES


def dead_letter_body(record: Mapping[str, Any], max_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """The dead-letter queue's message: the raw body plus why, as one ASCII JSON object
    (`body`, `reason`, `error`, `attempts`, `message_id`, `queue`, `time`, ...) that always
    fits `max_bytes`, whatever the body (the full body stays in `dead-letter.jsonl`):

    - as it is, when it fits;
    - else the body compressed: `"body_encoding": "zlib+base64"` (`body_bytes` its size);
    - else the body cut to fit: `"body_truncated": true`, `body_bytes`, `body_sha256`.
    Other fields are cut to `FIELD_CHARS` characters each.
    """
    doc = {k: _cut(v) for k, v in record.items() if k != "body"}
    body = str(record.get("body", ""))
    text = _dump({**doc, "body": body})
    if len(text) <= max_bytes:
        return text
    raw = body.encode("utf-8", "surrogatepass")
    packed = base64.b64encode(zlib.compress(raw, 9)).decode("ascii")
    text = _dump({**doc, "body": packed, "body_encoding": "zlib+base64", "body_bytes": len(raw)})
    if len(text) <= max_bytes:
        return text
    cut = {**doc, "body": "", "body_truncated": True, "body_bytes": len(raw),
           "body_sha256": hashlib.sha256(raw).hexdigest()}
    room = max_bytes - len(_dump(cut))
    low, high = 0, min(len(body), max(room, 0))  # the longest prefix whose escaped form fits
    while low < high:
        mid = (low + high + 1) // 2
        if len(_dump(body[:mid])) - 2 <= room:
            low = mid
        else:
            high = mid - 1
    return _dump({**cut, "body": body[:low]})


FIELD_CHARS = 2000  # any field of a dead-letter message other than the body


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > FIELD_CHARS:
        return value[:FIELD_CHARS] + "..."
    return value


def _dump(value: Any) -> str:
    # ASCII: every character is one byte (the size is the length), and no lone surrogate
    # or XML-forbidden character reaches the wire.
    return json.dumps(value, ensure_ascii=True, default=str)
