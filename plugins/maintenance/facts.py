"""What the cloud says now of a maintenance event's instance and of the event itself: read
before the sequence (`sequence.py`) acts, and before it acts on a resumed step's saved
state — that state was recorded by this fleet (signed, or from the store), and the cloud
must still agree with it (verify before acting)."""
from __future__ import annotations

from typing import Any

ALL_STATUSES = ("Scheduled", "Executing", "Inquiring", "Executed", "Avoided", "Canceled", "Failed")
# Statuses saying the reboot happened: the owner's reboot before notBefore makes the event
# Avoided; the platform's own makes it Executing, then Executed (ECS "System events").
DONE_BY_REBOOT = ("Avoided", "Executing", "Executed")


def verify(ctx: Any, event: Any, require_tag: str, members: list) -> tuple[str, str | None]:
    """(why not to act on a resumed step, or ""; the event's status now)."""
    iid = event.instance_id
    strangers = sorted({m.server_id for m in members if m.server_id != iid})
    if strangers:
        return f"its memberships name {', '.join(strangers)}, not the event's instance", None
    instance = instance_of(ctx, iid)
    if instance is None:
        return "no such instance (released?)", None
    if not has_tag(instance, require_tag):
        return f"it does not carry the opt-in tag {require_tag!r}", None
    status = event_status(ctx, event)
    if status is None:
        return "its O&M event is not found by its id (DescribeInstanceHistoryEvents)", None
    return "", status


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


def has_tag(instance: dict, require_tag: str) -> bool:
    if not require_tag.strip():
        return True
    key, sep, value = require_tag.partition("=")
    tags = {t.get("TagKey"): t.get("TagValue", "") for t in (instance.get("Tags") or {}).get("Tag") or []}
    return key in tags and (not sep or tags[key] == value)
