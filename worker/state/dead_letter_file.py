"""`dead-letter.jsonl`, the local record of every dead-lettered body: appended durably
(fsync before a message may be deleted), 0600, and searched at its end for a record a
worker died while writing (`Store.record_dead_letter`)."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

from ..events.keys import safe_key
from .store_types import StoreError

TAIL_BYTES = 1 << 20  # how far from the end a half-written record is looked for


def append_durably(path: str | os.PathLike, data: bytes) -> None:
    """Append and fsync: after this returns the data survives a crash. Raises `OSError`."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def holds_record(path: str | os.PathLike, message_id: str, tail: int = TAIL_BYTES) -> bool:
    """Whether the last `tail` bytes of the file hold this message's record."""
    needle = ('"message_id": ' + json.dumps(message_id, ensure_ascii=False)).encode("utf-8", "replace")
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - tail))
            return needle in fh.read()
    except OSError:
        return False


def record_once(path: str | os.PathLike, record: Mapping[str, Any],
                note: Callable[..., bool | None]) -> bool:
    """Append `record` as one JSON line and fsync: after this returns it survives a crash.

    Once per `message_id`: returns False (and writes nothing) when this message was
    recorded already — its dead-letter queue send failed and it came back. `note(key)`
    reads a store's note of it (None: none, False: being written, True: written) and
    `note(key, written)` writes it: noted as being written before the write and as written
    after it; a worker that died in between leaves the note half done, and the retry looks
    for the line at the end of the file before writing it again. Raises `StoreError`.
    """
    message_id = record.get("message_id")
    key = safe_key(str(message_id)) if message_id is not None else None
    try:
        data = (json.dumps(dict(record), ensure_ascii=False, default=str) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape everything, the file stays UTF-8
        data = (json.dumps(dict(record), ensure_ascii=True, default=str) + "\n").encode("ascii")
    if key is not None:
        written = note(key)
        if written is not None and (written or holds_record(path, str(message_id))):
            if not written:
                note(key, True)
            return False
        note(key, False)
    try:
        append_durably(path, data)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write: {exc.strerror}") from None
    if key is not None:
        note(key, True)
    return True
