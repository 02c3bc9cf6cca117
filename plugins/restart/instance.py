"""What the restart plugin reads and decides about one instance, and starting it."""
from __future__ import annotations

from ecs_worker import CloudError

SPOT_STRATEGIES = ("SpotAsPriceGo", "SpotWithPriceLimit")


def describe_instance(cloud, instance_id: str) -> dict | None:
    doc = cloud.ecs("DescribeInstances", InstanceIds=[instance_id])
    found = (doc.get("Instances") or {}).get("Instance") or []
    return next((i for i in found if i.get("InstanceId") == instance_id), None)


def tags_of(instance: dict) -> dict[str, str]:
    return {t.get("TagKey"): t.get("TagValue", "") for t in (instance.get("Tags") or {}).get("Tag") or []}


def has_tag(instance: dict, require_tag: str) -> bool:
    if not require_tag.strip():
        return True
    key, sep, value = require_tag.partition("=")
    tags = tags_of(instance)
    return key in tags and (not sep or tags[key] == value)


def locks_of(instance: dict) -> list[str]:
    locks = (instance.get("OperationLocks") or {}).get("LockReason") or []
    return [lock.get("LockReason", "") for lock in locks]


def skip_reason(instance: dict, interrupted: bool) -> str | None:
    status = instance.get("Status")
    if status != "Stopped":
        return f"it is {status} now"
    locks = locks_of(instance)
    if locks:
        return f"it is locked ({', '.join(locks)})"
    if instance.get("SpotStrategy") in SPOT_STRATEGIES and interrupted:
        return "it is a spot instance that had an interruption notice"
    return None


ALREADY_STARTED = "already started by someone else"


def start_instance(cloud, instance_id: str) -> str:
    try:
        cloud.ecs("StartInstance", InstanceId=instance_id)
    except CloudError as exc:
        if exc.code != "IncorrectInstanceStatus":
            raise
        # ECS answers this for any state StartInstance refuses (Starting, Running, Stopping,
        # a lock): re-read rather than assume someone else started it.
        now = describe_instance(cloud, instance_id)
        status = (now or {}).get("Status")
        if status in ("Starting", "Running"):
            return ALREADY_STARTED
        locks = locks_of(now) if now else []
        raise CloudError("StartInstance", exc.code,
                         f"refused; the instance is {status or 'gone'}"
                         + (f", locked ({', '.join(locks)})" if locks else ""), exc.http_status) from None
    return "started"
