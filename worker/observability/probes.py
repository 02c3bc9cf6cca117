"""`doctor --probe`'s test event, on both sides: the marked event doctor asks CloudMonitor to
send (`SendDryRunSystemEvent`), and the worker's record of the ones it received.

The mark is `content.ecsWorkerProbe` (an id). The event is one the rule delivers, shaped so
that no built-in acts on it in this version or an older one still running — a state change to
a state that is no state (`restart` acts on `Stopped` only), or an interruption whose action is
not `delete` (`slb` acts on `delete` only) — and this version's worker does not even show it to
the plugins: it logs it, records it (`/probes` on the metrics address) and deletes it.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from ..events.event import PREEMPTIBLE_INTERRUPTION, STATE_CHANGE

if TYPE_CHECKING:
    from concurrent.futures import Future

MARK = "ecsWorkerProbe"
INSTANCE = "i-ecsworkerprobe0000"  # no instance has this id
SHAPES = {STATE_CHANGE: {"state": "EcsWorkerProbe"},
          PREEMPTIBLE_INTERRUPTION: {"action": "ecs-worker-probe"}}
KEPT = 64  # probe ids remembered; doctor looks for its own within seconds


def probe_event(name: str, region: str, account: str) -> tuple[str, dict]:
    """(probe id, the CloudMonitor-shaped event to send) for a rule that delivers `name`."""
    probe = uuid.uuid4().hex
    return probe, {"product": "ECS", "name": name, "level": "INFO", "regionId": region,
                   "resourceId": f"acs:ecs:{region}:{account}:instance/{INSTANCE}",
                   "content": {"resourceId": INSTANCE, "instanceId": INSTANCE, **SHAPES[name], MARK: probe}}


def probe_id(content: Any) -> str | None:
    """The probe id an event's content carries, or None for every real event."""
    try:
        value = content.get(MARK)
    except AttributeError:
        return None
    return value if isinstance(value, str) and value else None


class Record:
    """The probes this process received (id -> when), newest last, bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: deque[tuple[str, float]] = deque(maxlen=KEPT)

    def note(self, probe: str) -> None:
        with self._lock:
            self._seen.append((probe, time.time()))

    def seen(self) -> list[dict]:
        with self._lock:
            return [{"id": p, "received": t} for p, t in self._seen]


RECEIVED = Record()  # the process's one record, as `metrics` is its one registry


def received(event: Any) -> "Future":
    """A probe reached this worker: log it, record it, and settle it as ignored (deleted,
    nothing acted) — the future `Dispatcher.start` returns."""
    import logging
    from concurrent.futures import Future

    from ..plugin_host.outcomes import IGNORED, Result

    probe = probe_id(event.content) or "?"
    RECEIVED.note(probe)
    logging.getLogger("ecs_worker.dispatch").info(
        "probe %s received (doctor --probe): the chain to this worker works; acting on nothing", probe,
        extra={"event_id": event.id})
    done: Future = Future()
    done.set_result(Result(IGNORED, event))
    return done
