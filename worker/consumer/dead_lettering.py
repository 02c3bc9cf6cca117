"""Dead-lettering one message (for the settle thread, `settle.py`): its record written once to
`state_dir/dead-letter.jsonl` (the store), then sent to the dead-letter queue, when one is
configured, as a body that fits that queue's maximum message size. A transient failure keeps
the message (it comes back); a permanent refusal by the dead-letter queue (AccessDenied, no
such queue, refused body) leaves the local record alone to keep it, logged and counted."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from ..observability import metrics
from ..queue.dead_letters import dead_letter_body
from ..queue.source import MnsError, MnsQueue, refused_for_good
from ..state.store import Store, StoreError
from ..text import one_line
from .held import Held

log = logging.getLogger("ecs_worker.settle")


def dead_letter(held: Held, reason: str, error: str | None, queue: str, store: Store,
                dead_letters: MnsQueue | None, max_size: int) -> str | None:
    """None when the message is dead-lettered (it may be deleted now), else why it must stay."""
    m = held.message
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "queue": queue, "message_id": m.id, "reason": reason, "error": error,
              "attempts": held.attempt or m.dequeue_count, "dequeue_count": m.dequeue_count,
              "event_id": held.event.id if held.event else None, "key": held.key,
              "body": m.body.decode("utf-8", "replace")}
    try:
        store.record_dead_letter(record)  # once per message: a retry writes nothing
    except StoreError as exc:
        return f"cannot record it: {exc}"
    if dead_letters is not None:
        try:
            dead_letters.send(dead_letter_body(record, max_size))
        except MnsError as exc:
            if not refused_for_good(exc):
                return str(exc)
            metrics.DEAD_LETTER_QUEUE_FAILURES.inc()
            log.error("message %s: the dead-letter queue refuses it (%s); %s alone keeps it",
                      m.id, exc, store.dead_letter_path, extra={"message_id": m.id})
    metrics.DEAD_LETTERS.labels(reason).inc()
    log.warning("message %s dead-lettered (%s): %s", m.id, reason, one_line(error or ""),
                extra={"message_id": m.id, "event_id": record["event_id"]})
    return None
