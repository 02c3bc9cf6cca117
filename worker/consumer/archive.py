"""`[worker] archive`: every received body appended, one line each, to a 0600 file, so
that what arrived can be replayed (`ecs-worker replay`)."""
from __future__ import annotations

import logging
import os
from typing import Iterable

log = logging.getLogger("ecs_worker.runner")


def append(path: str, bodies: Iterable[bytes]) -> None:
    """Append each body as one line; a failure is logged, never raised."""
    text = "".join(body.decode("utf-8", "replace").strip().replace("\r", "").replace("\n", " ") + "\n"
                   for body in bodies)
    try:  # 0600 like every file in state_dir
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError as exc:
        log.error("archive %s: %s", path, exc.strerror)
