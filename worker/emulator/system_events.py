"""Scheduled ECS system events (O&M events) per instance, and their transitions.

An event is `Scheduled` until one of:
- the owner reboots the instance first (`RebootInstance`) → `Avoided` (unless the event is
  marked `avoidable: false`: Alibaba, "if the event status remains unchanged after the instance
  is restarted, the event handling fails"; it then stays `Scheduled`), for the event types
  a reboot settles (`SystemMaintenance.Reboot`, `SystemFailure.Reboot`,
  `InstanceFailure.Reboot`; Alibaba: "O&M events: reboot the instance yourself before
  the scheduled time and the event becomes Avoided"); or redeploys it first
  (`RedeployInstance`, documented for Scheduled `SystemMaintenance.Reboot` and
  `SystemMaintenance.Redeploy`) → `Avoided`;
- `notBefore` passes → `Executed`, and the platform reboots a Running instance.
Each change is published as `Instance:<EventType>:<Status>` through `publish` (the ECS
model's `publish_event`, which hands it to the event rules like any fleet change), with
the content Alibaba's notifications carry: `eventId`, `eventType`, `eventStatus`,
`notBefore`, `instanceId`. Events from the state file count as announced already; events
added later (`schedule`) publish their `Scheduled` notification at once.

`DescribeInstanceHistoryEvents` answers as documented: without `InstanceEventCycleStatus.N`
/ `EventCycleStatus` only non-active events (Avoided, Executed, Canceled, Failed) are listed.
Transitions are applied lazily, on the next call (no timer threads), under the emulator's lock.
"""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Mapping

from .rpc_params import repeat

REBOOT_SETTLES = ("SystemMaintenance.Reboot", "SystemFailure.Reboot", "InstanceFailure.Reboot")
REDEPLOY_SETTLES = ("SystemMaintenance.Reboot", "SystemMaintenance.Redeploy")
ACTIVE = ("Scheduled", "Executing", "Inquiring")
STATUSES = ("Scheduled", "Executing", "Inquiring", "Executed", "Avoided", "Canceled", "Failed")
_TYPE_CODES = {"SystemMaintenance.Reboot": 1, "SystemFailure.Reboot": 65, "InstanceFailure.Reboot": 66,
               "SystemMaintenance.Redeploy": 2, "SystemFailure.Redeploy": 32}
_STATUS_CODES = {"Scheduled": 24, "Avoided": 16, "Executing": 32, "Executed": 48, "Canceled": 64,
                 "Failed": 65, "Inquiring": 66}


def parse_time(text: str) -> float:
    """ISO 8601 (`2026-11-29T18:00:00Z`) to epoch seconds; a naive time is UTC."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SystemEvents:
    """Every instance's scheduled events. `publish(name, instance_id, content, level)`;
    `reboot(instance)` makes the platform reboot a Running instance at `notBefore`."""

    def __init__(self, instances: list[dict], publish: Callable[..., None], reboot: Callable[[str], None],
                 error: type) -> None:
        self._publish = publish
        self._reboot = reboot
        self._error = error
        self.events: list[dict] = []
        for inst in instances:
            for e in inst.get("scheduled_events", []):
                self.events.append({"event_id": e["event_id"], "instance_id": inst["id"],
                                    "event_type": e["event_type"], "not_before": parse_time(e["not_before"]),
                                    "status": e.get("status", "Scheduled"), "published": time.time(),
                                    "finished": None, "avoidable": e.get("avoidable", True)})

    # ------------------------------------------------------------------ changes

    def schedule(self, instance_id: str, event_type: str, not_before: float, event_id: str | None = None,
                 avoidable: bool = True) -> dict:
        event = {"event_id": event_id or f"e-{uuid.uuid4().hex[:20]}", "instance_id": instance_id,
                 "event_type": event_type, "not_before": not_before, "status": "Scheduled",
                 "published": time.time(), "finished": None, "avoidable": avoidable}
        self.events.append(event)
        self._announce(event)
        return event

    def owner_rebooted(self, instance_id: str, settles: tuple = REBOOT_SETTLES) -> None:
        self.tick()
        for e in self.events:
            if e["instance_id"] == instance_id and e["status"] == "Scheduled" and e["event_type"] in settles \
                    and e["avoidable"]:  # not avoidable: the reboot leaves it Scheduled ("handling fails")
                self._move(e, "Avoided")

    def owner_redeployed(self, instance_id: str) -> None:
        self.owner_rebooted(instance_id, REDEPLOY_SETTLES)

    def tick(self, now: float | None = None) -> None:
        now = now or time.time()
        for e in self.events:
            if e["status"] == "Scheduled" and now >= e["not_before"]:
                self._move(e, "Executed")
                if e["event_type"] in REBOOT_SETTLES + REDEPLOY_SETTLES:
                    self._reboot(e["instance_id"])

    def _move(self, event: dict, status: str) -> None:
        event["status"], event["finished"] = status, time.time()
        self._announce(event)

    def _announce(self, e: dict) -> None:
        content = {"eventId": e["event_id"], "eventType": e["event_type"], "eventStatus": e["status"],
                   "notBefore": iso(e["not_before"]), "instanceId": e["instance_id"]}
        level = "CRITICAL" if e["status"] == "Scheduled" else "INFO"
        self._publish(f"Instance:{e['event_type']}:{e['status']}", e["instance_id"], content, level)

    # ------------------------------------------------------------------ reads

    def describe(self, p: Mapping[str, str], page: Callable[..., dict]) -> dict:
        self.tick()
        statuses = repeat(p, "InstanceEventCycleStatus") or ([p["EventCycleStatus"]] if p.get("EventCycleStatus")
                                                              else [s for s in STATUSES if s not in ACTIVE])
        ids = set(repeat(p, "EventId"))
        if len(ids) > 100:
            raise self._error(400, "InvalidParameter", "The specified parameter \"EventId.N\" is not valid.")
        types = set(repeat(p, "InstanceEventType")) | ({p["EventType"]} if p.get("EventType") else set())
        found = [e for e in self.events
                 if e["status"] in statuses and (not ids or e["event_id"] in ids)
                 and (not p.get("InstanceId") or e["instance_id"] == p["InstanceId"])
                 and (not types or e["event_type"] in types)]
        result = page(found, p, 100)
        return {"InstanceSystemEventSet": {"InstanceSystemEventType": [self._json(e) for e in result.pop("items")]},
                **result}

    @staticmethod
    def _json(e: dict) -> dict:
        out = {"EventId": e["event_id"], "InstanceId": e["instance_id"],
               "EventType": {"Code": _TYPE_CODES.get(e["event_type"], 0), "Name": e["event_type"]},
               "EventCycleStatus": {"Code": _STATUS_CODES.get(e["status"], 0), "Name": e["status"]},
               "NotBefore": iso(e["not_before"]), "EventPublishTime": iso(e["published"]),
               "ImpactLevel": "", "Reason": "", "ReasonCode": ""}
        if e["finished"]:
            out["EventFinishTime"] = iso(e["finished"])
        return out

    def snapshot(self, instance_id: str) -> list[dict]:
        return [{"event_id": e["event_id"], "event_type": e["event_type"], "not_before": iso(e["not_before"]),
                 "status": e["status"]} for e in self.events if e["instance_id"] == instance_id]
