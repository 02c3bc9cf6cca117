"""`dead-letter.jsonl`, the local record of every dead-lettered body: appended durably
(fsync before a message may be deleted), 0600, and searched at its end for a record a
worker died while writing (`Store.record_dead_letter`)."""
from __future__ import annotations

import json
import os

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
