"""ECS (Version 2014-05-26): instances and their actions, answered in the real JSON shapes.

Instances change state lazily: StartInstance sets Starting plus a due time, and any later read
applies the transition (Starting -> Running after `start_delay_seconds`, Stopping -> Stopped after
`stop_delay_seconds`), so no timer threads exist. Each change is published as an
`Instance:StateChange` fleet event through `publish`. All methods run under the emulator's lock.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Mapping

from .rpc_params import RpcError, iso_minutes, missing, paginate, repeat, require, tag_filters
from .system_events import SystemEvents

ECS_VERSION = "2014-05-26"


class EcsService:
    """The instances of one emulator. `publish(name, instance_id, content, level)` sends a fleet event."""

    def __init__(self, state: dict, publish: Callable[..., None], created: float):
        self.region = state["region"]
        self.publish = publish
        self.start_delay = state["start_delay_seconds"]
        self.stop_delay = state["stop_delay_seconds"]
        self.instances: dict[str, dict] = {}
        for i in state["instances"]:
            inst = dict(i, tags=dict(i["tags"]), locks=list(i["locks"]), due=None, created=created)
            self.instances[i["id"]] = inst
        self.system_events = SystemEvents(state["instances"], publish, self.platform_reboot, RpcError)
        self.actions: dict[str, Callable] = {
            "DescribeInstances": self.describe_instances,
            "DescribeInstanceStatus": self.describe_instance_status,
            "StartInstance": self.start_instance,
            "StartInstances": self.start_instances,
            "StopInstance": self.stop_instance,
            "StopInstances": self.stop_instances,
            "DescribeTags": self.describe_tags,
            "RebootInstance": self.reboot_instance,
            "RedeployInstance": self.redeploy_instance,
            "DescribeInstanceHistoryEvents": self.describe_instance_history_events,
        }

    def apply_due(self, inst: dict, now: float | None = None) -> dict:
        """Apply the instance's due transitions (lazily: on every read)."""
        now = now or time.time()
        due = inst["due"]
        while due is not None and now >= due[1]:  # (status, at[, next due]): a reboot chains two
            inst["status"], inst["due"] = due[0], (due[2] if len(due) > 2 else None)
            due = inst["due"]
            self.state_changed(inst)
        return inst

    def _instance(self, instance_id: str) -> dict:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise RpcError(404, "InvalidInstanceId.NotFound", "The specified InstanceId does not exist.")
        return self.apply_due(inst)

    def all_instances(self) -> list[dict]:
        now = time.time()
        return [self.apply_due(i, now) for i in self.instances.values()]

    def _instance_json(self, i: dict) -> dict:
        return {
            "InstanceId": i["id"], "InstanceName": i["name"], "HostName": i["name"], "RegionId": self.region,
            "ZoneId": i["zone_id"], "Status": i["status"], "InstanceType": i["instance_type"],
            "InstanceChargeType": "PostPaid", "InternetChargeType": "PayByTraffic",
            "SpotStrategy": "SpotAsPriceGo" if i["spot"] else "NoSpot", "SpotPriceLimit": 0.0,
            "StoppedMode": i["stopped_mode"] if i["status"] == "Stopped" else "Not-applicable",
            "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in i["tags"].items()]},
            "OperationLocks": {"LockReason": [{"LockReason": r} for r in i["locks"]]},
            "CreationTime": iso_minutes(i["created"]), "ExpiredTime": "2099-12-31T15:59Z",
            "InstanceNetworkType": "vpc", "Cpu": 2, "Memory": 8192, "OSType": "linux",
        }

    @staticmethod
    def _matches_tags(inst: dict, filters: list) -> bool:
        for key, value in filters:
            if key not in inst["tags"] or (value is not None and inst["tags"][key] != value):
                return False
        return True

    def describe_instances(self, p: Mapping[str, str]) -> dict:
        instances = self.all_instances()
        if p.get("InstanceIds"):
            try:
                ids = json.loads(p["InstanceIds"])
                if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
                    raise ValueError
            except ValueError:
                raise RpcError(400, "InvalidInstanceIds.Malformed",
                               "The specified parameter InstancesIds is not valid.") from None
            if len(ids) > 100:
                raise RpcError(400, "InvalidInstanceIds.Malformed",
                               "The specified parameter InstancesIds is not valid.")
            wanted = set(ids)
            instances = [i for i in instances if i["id"] in wanted]
        if p.get("Status"):
            instances = [i for i in instances if i["status"] == p["Status"]]
        filters = tag_filters(p)
        instances = [i for i in instances if self._matches_tags(i, filters)]
        page = paginate(instances, p, 100)
        return {"Instances": {"Instance": [self._instance_json(i) for i in page.pop("items")]}, **page}

    def describe_instance_status(self, p: Mapping[str, str]) -> dict:
        instances = self.all_instances()
        ids = repeat(p, "InstanceId")
        if ids:
            wanted = set(ids)
            instances = [i for i in instances if i["id"] in wanted]
        page = paginate(instances, p, 50)
        statuses = [{"InstanceId": i["id"], "Status": i["status"]} for i in page.pop("items")]
        return {"InstanceStatuses": {"InstanceStatus": statuses}, **page}

    def _check_locks(self, inst: dict) -> None:
        """ECS "API behavior when an instance is locked for security reasons": StartInstance /
        StopInstance answer InstanceLockedForSecurity; an overdue-payment lock answers
        InstanceExpiredOrInArrears. Other locks (e.g. a spot instance's Recycling) have no
        documented code of their own: IncorrectInstanceStatus, which callers must re-read."""
        locks = {lock.lower() for lock in inst["locks"]}
        if "security" in locks:
            raise RpcError(403, "InstanceLockedForSecurity",
                           "The specified operation is denied as your instance is locked for security reasons.")
        if "financial" in locks:
            raise RpcError(403, "InstanceExpiredOrInArrears",
                           "The specified operation is denied as your prepay instance is expired (prepay mode) "
                           "or in arrears (afterpay mode).")
        if locks:
            raise incorrect_status()

    def _start(self, inst: dict, dry_run: bool) -> str:
        self._check_locks(inst)
        if inst["status"] != "Stopped":
            raise incorrect_status()
        if dry_run:
            raise dry_run_passed()
        previous = inst["status"]
        inst["status"], inst["due"] = "Starting", ("Running", time.time() + self.start_delay)
        self.state_changed(inst)
        self.apply_due(inst)
        return previous

    def _stop(self, inst: dict, p: Mapping[str, str], dry_run: bool) -> str:
        self._check_locks(inst)
        if inst["status"] != "Running":
            raise incorrect_status()
        if dry_run:
            raise dry_run_passed()
        mode = p.get("StoppedMode") or "KeepCharging"
        if mode not in ("KeepCharging", "StopCharging"):
            raise RpcError(400, "InvalidParameter", "The specified parameter \"StoppedMode\" is not valid.")
        previous = inst["status"]
        inst["stopped_mode"] = mode
        inst["status"], inst["due"] = "Stopping", ("Stopped", time.time() + self.stop_delay)
        self.state_changed(inst)
        self.apply_due(inst)
        return previous

    def start_instance(self, p: Mapping[str, str]) -> dict:
        self._start(self._instance(require(p, "InstanceId")), p.get("DryRun") == "true")
        return {}

    def stop_instance(self, p: Mapping[str, str]) -> dict:
        self._stop(self._instance(require(p, "InstanceId")), p, p.get("DryRun") == "true")
        return {}

    def _batch(self, p: Mapping[str, str], op: Callable[[dict], str], required: str) -> dict:
        ids = repeat(p, "InstanceId")
        if not ids:
            raise missing("InstanceId.N")
        if len(ids) > 100:
            raise RpcError(400, "InvalidParameter", "The specified parameter \"InstanceId.N\" is not valid.")
        # AllTogether (the default) is all-or-nothing: validate every instance before changing any.
        if p.get("BatchOptimization", "AllTogether") != "SuccessFirst":
            for iid in ids:
                inst = self._instance(iid)
                self._check_locks(inst)
                if inst["status"] != required:
                    raise incorrect_status()
        out = []
        for iid in ids:
            try:
                previous = op(self._instance(iid))
                out.append({"InstanceId": iid, "Code": "200", "Message": "success",
                            "PreviousStatus": previous, "CurrentStatus": self.instances[iid]["status"]})
            except RpcError as e:
                inst = self.instances.get(iid)
                status = inst["status"] if inst else ""
                out.append({"InstanceId": iid, "Code": e.code, "Message": e.message,
                            "PreviousStatus": status, "CurrentStatus": status})
        return {"InstanceResponses": {"InstanceResponse": out}}

    def start_instances(self, p: Mapping[str, str]) -> dict:
        dry = p.get("DryRun") == "true"

        def start(inst: dict) -> str:
            return self._start(inst, dry)
        return self._batch(p, start, "Stopped")

    def stop_instances(self, p: Mapping[str, str]) -> dict:
        dry = p.get("DryRun") == "true"

        def stop(inst: dict) -> str:
            return self._stop(inst, p, dry)
        return self._batch(p, stop, "Running")

    def reboot_instance(self, p: Mapping[str, str]) -> dict:
        """RebootInstance: Running -> Starting -> Running ("the status of the instance changes
        to Starting", ECS API reference); settles the instance's scheduled reboot events (they
        become Avoided)."""
        inst = self._instance(require(p, "InstanceId"))
        self._check_locks(inst)
        if inst["status"] != "Running":
            raise incorrect_status()
        if p.get("DryRun") == "true":
            raise dry_run_passed()
        self._begin_reboot(inst)
        self.system_events.owner_rebooted(inst["id"])
        return {}

    def redeploy_instance(self, p: Mapping[str, str]) -> dict:
        """RedeployInstance (asynchronous, answers a TaskId): Running -> Stopping -> Starting ->
        Running, Stopped -> Starting -> Running; settles Scheduled SystemMaintenance.Reboot /
        .Redeploy events (they become Avoided). No DryRun parameter, as in the API."""
        inst = self._instance(require(p, "InstanceId"))
        if "Security" in inst["locks"]:
            self._check_locks(inst)
        if inst["status"] not in ("Running", "Stopped"):
            raise incorrect_status()
        if inst["status"] == "Running":  # documented: Running enters Stopping
            now = time.time()
            inst["status"] = "Stopping"
            inst["due"] = ("Starting", now + self.stop_delay, ("Running", now + self.stop_delay + self.start_delay))
        else:
            inst["status"], inst["due"] = "Starting", ("Running", time.time() + self.start_delay)
        self.state_changed(inst)
        self.system_events.owner_redeployed(inst["id"])
        return {"TaskId": f"t-{inst['id'][-8:]}{int(time.time() * 1000) % 10**8}"}

    def _begin_reboot(self, inst: dict) -> None:
        now = time.time()
        inst["status"], inst["due"] = "Starting", ("Running", now + self.stop_delay + self.start_delay)
        self.state_changed(inst)
        self.apply_due(inst, now)

    def platform_reboot(self, instance_id: str) -> None:
        inst = self.instances.get(instance_id)
        if inst is not None and self.apply_due(inst)["status"] == "Running":
            self._begin_reboot(inst)

    def describe_instance_history_events(self, p: Mapping[str, str]) -> dict:
        return self.system_events.describe(p, paginate)

    def describe_tags(self, p: Mapping[str, str]) -> dict:
        instances = self.all_instances()
        if p.get("ResourceType") and p["ResourceType"].lower() != "instance":
            instances = []
        if p.get("ResourceId"):
            instances = [i for i in instances if i["id"] == p["ResourceId"]]
        filters = tag_filters(p)
        counts: dict[tuple[str, str], int] = {}
        for i in instances:
            for k, v in i["tags"].items():
                if not filters or any(k == fk and (fv is None or v == fv) for fk, fv in filters):
                    counts[(k, v)] = counts.get((k, v), 0) + 1
        tags = [{"TagKey": k, "TagValue": v, "ResourceTypeCount": {"Instance": n}}
                for (k, v), n in sorted(counts.items())]
        page = paginate(tags, p, 100, 50)
        return {"Tags": {"Tag": page.pop("items")}, **page}

    def state_changed(self, inst: dict) -> None:
        self.publish("Instance:StateChange", inst["id"],
                     {"resourceId": inst["id"], "resourceType": "ALIYUN::ECS::Instance", "state": inst["status"]})


def incorrect_status() -> RpcError:
    """ECS's answer to an operation the instance's status does not allow (API error tables)."""
    return RpcError(403, "IncorrectInstanceStatus",
                    "The current status of the resource does not support this operation.")


def dry_run_passed() -> RpcError:
    """`DryRun=true` on a call that would be allowed: ECS answers this instead of acting."""
    return RpcError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
