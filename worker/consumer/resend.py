"""Re-sending a deferred message as a wrapped copy (`deferred.py`): what the settler does
for a long wait, or for a wait that carries a plugin's saved state."""
from __future__ import annotations

import logging
import time

from ..events.wrapper import RESUME_STATE, wrap
from .held import Held
from ..trust.fleet_key import Signer
from ..queue.source import MnsError, MnsQueue

log = logging.getLogger("ecs_worker.settle")


def carries_state(resume: dict | None) -> bool:
    return bool(resume and resume.get(RESUME_STATE))


def resend(source: MnsQueue, held: Held, seconds: int, resume: dict, made: int,
           signer: Signer | None, max_size: int) -> bool:
    """Send the wrapped copy, signed when there is a key; False when it cannot go (then
    the caller holds the message instead)."""
    wrapped = held.wrapped
    now = time.time()
    since = wrapped.since if wrapped else now
    until = wrapped.until if wrapped and wrapped.until > now else now + seconds
    body = wrapped.body if wrapped else held.message.body
    copy = wrap(body, held.key, resume, made, since, until, now, signer)
    if len(copy.body) > max_size:
        log.warning("message %s: deferred %ds, but its re-sent copy would exceed the queue's %d-byte "
                    "limit; holding it instead", held.message.id, seconds, max_size)
        return False
    try:
        new_id = source.send(copy.body, delay_seconds=copy.delay)
    except MnsError as exc:
        log.warning("message %s: cannot re-send the deferral (%s); holding it instead", held.message.id, exc)
        return False
    log.info("message %s deferred %ds: re-sent as %s with DelaySeconds=%d", held.message.id, seconds,
             new_id, copy.delay, extra={"message_id": held.message.id})
    return True
