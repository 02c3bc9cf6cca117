"""What the cloud says now of a maintenance event's instance and of the event itself: read
before the sequence (`sequence.py`) acts, after the reboot (`outcome.py`), and before it acts
on a resumed step's saved state (`verify.py`)."""
from __future__ import annotations

from typing import Any

ALL_STATUSES = ("Scheduled", "Executing", "Inquiring", "Executed", "Avoided", "Canceled", "Failed")
# Statuses saying the reboot happened: the owner's reboot before notBefore makes the event
# Avoided; the platform's own makes it Executing, then Executed (ECS "System events").
DONE_BY_REBOOT = ("Avoided", "Executing", "Executed")


def instance_of(ctx: Any, iid: str) -> dict | None:
    doc = ctx.cloud.ecs("DescribeInstances", InstanceIds=[iid])
    found = (doc.get("Instances") or {}).get("Instance") or []
    return next((i for i in found if i.get("InstanceId") == iid), None)


def event_status(ctx: Any, event: Any) -> str | None:
    """The event's status now (None when the notification names no event id, or ECS does
    not know it)."""
    event_id = event.content.get("eventId")
    if not isinstance(event_id, str) or not event_id:
        return None
    params = {"InstanceId": event.instance_id, "EventId.1": event_id,
              **{f"InstanceEventCycleStatus.{n}": s for n, s in enumerate(ALL_STATUSES, 1)}}
    doc = ctx.cloud.ecs("DescribeInstanceHistoryEvents", **params)
    for e in (doc.get("InstanceSystemEventSet") or {}).get("InstanceSystemEventType") or []:
        if e.get("EventId") == event_id:
            return (e.get("EventCycleStatus") or {}).get("Name")
    return None
