"""Auto Scaling (ESS, Version 2014-08-28): scaling groups, their instances and lifecycle hooks, the
lifecycle actions of scaling activities (ess_activity.py), answered in the API's JSON shapes with
the error codes of Alibaba's ESS reference. All methods run under the emulator's lock."""
from __future__ import annotations

import re
import time
from typing import Callable, Mapping

from .ess_activity import Activities, new_id
from .ess_state import HEARTBEAT_DEFAULT, HEARTBEAT_MAX, HEARTBEAT_MIN, RESULTS, TRANSITIONS
from .rpc_params import RpcError, int_param, iso_minutes, paginate, repeat, require

ESS_VERSION = "2014-08-28"
MAX_HOOKS_PER_GROUP = 6  # CreateLifecycleHook (2014-08-28): at most 6 per scaling group
_QUEUE_ARN = re.compile(r"^acs:ess:[^:]+:[^:]+:(queue|topic|oos)/.+$")


def invalid(name: str) -> RpcError:
    return RpcError(400, "InvalidParamter", f"The specified value of parameter \"{name}\" is not valid.")


class AutoScaling:
    """ESS of one emulator: `groups` (id -> group), `activities` (ess_activity.Activities)."""

    def __init__(self, state: dict, ecs, clb, alb, nlb) -> None:
        self.region, self.account_id = state["region"], state["account_id"]
        self.ecs, self.lbs = ecs, {"clb": clb, "alb": alb, "nlb": nlb}
        self.detach, self.time_scale = state.get("ess_detach", "after"), state.get("ess_time_scale", 1.0)
        self.deliver: Callable[[str, str], object] = lambda queue, body: None  # world.py wires the queues
        self.groups: dict[str, dict] = {}
        for g in state.get("scaling_groups", []):
            self.groups[g["id"]] = {**g, "instances": list(g["instances"]), "hooks": [dict(h) for h in g["lifecycle_hooks"]],
                                    "attached": {"clb": g["vserver_groups"], "alb": g["alb_server_groups"],
                                                 "nlb": g["nlb_server_groups"]}}
        self.activities = Activities(self)
        self.actions: dict[str, Callable] = {
            "DescribeScalingGroups": self.describe_scaling_groups,
            "DescribeScalingInstances": self.describe_scaling_instances,
            "DescribeScalingActivities": self.describe_scaling_activities,
            "CreateLifecycleHook": self.create_hook, "ModifyLifecycleHook": self.modify_hook,
            "DescribeLifecycleHooks": self.describe_hooks,
            "DescribeLifecycleActions": self.describe_lifecycle_actions,
            "CompleteLifecycleAction": self.complete, "RecordLifecycleActionHeartbeat": self.heartbeat,
        }

    # -- the emulator's side: scaling, membership --------------------------------------
    def scale_in(self, group_id: str, instance_ids: list[str]) -> dict:
        group = self._group_by_id(group_id)
        for iid in instance_ids:
            if iid not in group["instances"] or self.activities.pending_for(iid):
                raise ValueError(f"{iid!r} is not an InService instance of {group_id}")
        return self.activities.start(group, "SCALE_IN", instance_ids)

    def scale_out(self, group_id: str, count: int) -> dict:
        group = self._group_by_id(group_id)
        ids = [new_id("i") for _ in range(count)]
        for iid in ids:
            self.ecs.instances[iid] = {"id": iid, "status": "Running", "tags": {}, "spot": False, "locks": [],
                                       "name": iid, "zone_id": f"{self.region}-b", "instance_type": "ecs.g6.large",
                                       "stopped_mode": "Not-applicable", "scheduled_events": [], "due": None,
                                       "created": time.time()}
            group["instances"].append(iid)
        return self.activities.start(group, "SCALE_OUT", ids)

    def hook(self, hook_id: str) -> dict | None:
        return next((h for g in self.groups.values() for h in g["hooks"] if h["id"] == hook_id), None)

    def memberships(self, iid: str) -> list[str]:
        """Every load-balancer group entry holding `iid` ("clb:rsp-…:80"), attached or not."""
        out = [f"clb:{g['id']}:{s['port']}" for lb in self.lbs["clb"].lbs.values() for g in lb["vserver_groups"]
               for s in g["backend_servers"] if s["server_id"] == iid]
        for kind in ("alb", "nlb"):
            out += [f"{kind}:{g['id']}:{s['port']}" for g in self.lbs[kind].groups.values()
                    for s in g["servers"] if s["server_id"] == iid]
        return out

    def _entries(self, kind: str, group_id: str) -> list | None:
        if kind == "clb":
            found = self.lbs["clb"].groups.get(group_id)
            return found[1]["backend_servers"] if found else None
        found = self.lbs[kind].groups.get(group_id)
        return found["servers"] if found else None

    def detach_from_attached(self, group: dict, iids: list[str]) -> None:
        for kind, attached in group["attached"].items():
            for a in attached:
                entries = self._entries(kind, a["id"])
                if entries is not None:  # ESS's own removal: idempotent, whoever took it out first
                    entries[:] = [s for s in entries if s["server_id"] not in iids]

    def in_service(self, group: dict, iid: str) -> None:
        for kind, attached in group["attached"].items():
            for a in attached:
                entries = self._entries(kind, a["id"])
                if entries is not None and not any(s["server_id"] == iid and s["port"] == a["port"] for s in entries):
                    entries.append({"server_id": iid, "port": a["port"], "weight": a["weight"], "type": "ecs"})

    def release(self, group: dict | None, iid: str) -> None:
        if group is not None:
            self.detach_from_attached(group, [iid])
            if iid in group["instances"]:
                group["instances"].remove(iid)
        inst = self.ecs.instances.pop(iid, None)
        if inst is not None:
            inst["status"] = "Deleted"
            self.ecs.state_changed(inst)

    # -- API ---------------------------------------------------------------------------
    def _group_by_id(self, group_id: str) -> dict:
        group = self.groups.get(group_id)
        if group is None:
            raise RpcError(404, "InvalidScalingGroupId.NotFound", "The specified scaling group does not exist.")
        return group

    def describe_scaling_groups(self, p: Mapping[str, str]) -> dict:
        wanted = set(repeat(p, "ScalingGroupId"))  # ScalingGroupId.N (the SDK's repeat list)
        groups = [g for g in self.groups.values() if not wanted or g["id"] in wanted]
        page = paginate(groups, p, 50)
        return {"ScalingGroups": {"ScalingGroup": [
            {"ScalingGroupId": g["id"], "ScalingGroupName": g["name"], "RegionId": self.region,
             "LifecycleState": "Active", "TotalCapacity": len(g["instances"]),
             "VServerGroups": {"VServerGroup": [{"LoadBalancerId": self.lbs["clb"].lb_of_group(a["id"]),
                                                 "VServerGroupAttributes": {"VServerGroupAttribute": [
                                                     {"VServerGroupId": a["id"], "Port": a["port"], "Weight": a["weight"]}]}}
                                                for a in g["attached"]["clb"]]},
             "AlbServerGroups": {"AlbServerGroup": [{"AlbServerGroupId": a["id"], "Port": a["port"], "Weight": a["weight"]}
                                                    for a in g["attached"]["alb"]]}}
            for g in page.pop("items")]}, **page}

    def describe_scaling_instances(self, p: Mapping[str, str]) -> dict:
        group = self._group_by_id(require(p, "ScalingGroupId"))
        wanted = set(repeat(p, "InstanceId"))  # InstanceId.N
        rows = []
        for iid in group["instances"]:
            if wanted and iid not in wanted:
                continue
            action = self.activities.pending_for(iid)
            state = "InService" if action is None else (
                "Removing:Wait" if self.activities.activities[action["activity_id"]]["transition"] == "SCALE_IN"
                else "Pending:Wait")
            rows.append({"InstanceId": iid, "ScalingGroupId": group["id"], "LifecycleState": state,
                         "HealthStatus": "Healthy", "CreationType": "AutoCreated"})
        page = paginate(rows, p, 100, 10)
        return {"ScalingInstances": {"ScalingInstance": page.pop("items")}, **page}

    def describe_scaling_activities(self, p: Mapping[str, str]) -> dict:
        ids = set(repeat(p, "ScalingActivityId"))  # ScalingActivityId.N
        acts = [a for a in self.activities.activities.values()
                if (not p.get("ScalingGroupId") or a["group_id"] == p["ScalingGroupId"]) and (not ids or a["id"] in ids)]
        page = paginate(acts, p, 50)
        return {"ScalingActivities": {"ScalingActivity": [
            {"ScalingActivityId": a["id"], "ScalingGroupId": a["group_id"], "StatusCode": a["status"],
             "Description": f"{a['transition']} {len(a['instances'])} instance(s)", "StartTime": iso_minutes(a["start"]),
             "EndTime": iso_minutes(a["end"]) if a["end"] else None} for a in page.pop("items")]}, **page}

    def _hook_json(self, group: dict, h: dict) -> dict:
        return {"ScalingGroupId": group["id"], "LifecycleHookId": h["id"], "LifecycleHookName": h["name"],
                "LifecycleTransition": h["transition"], "DefaultResult": h["default_result"],
                "HeartbeatTimeout": h["heartbeat_timeout"], "NotificationArn": h.get("notification_arn") or "",
                "NotificationMetadata": h.get("notification_metadata") or "", "LifecycleHookStatus": "Active"}

    def _hook_fields(self, p: Mapping[str, str], hook: dict) -> dict:
        out = dict(hook)
        if p.get("LifecycleTransition"):
            if p["LifecycleTransition"] not in TRANSITIONS:
                raise invalid("LifecycleTransition")
            out["transition"] = p["LifecycleTransition"]
        if p.get("DefaultResult"):
            if p["DefaultResult"] not in RESULTS:
                raise invalid("DefaultResult")
            out["default_result"] = p["DefaultResult"]
        if p.get("HeartbeatTimeout"):
            out["heartbeat_timeout"] = _heartbeat(p, "HeartbeatTimeout")
        if p.get("NotificationArn"):
            if not _QUEUE_ARN.match(p["NotificationArn"]):
                raise RpcError(400, "InvalidNotificationArn", "The specified parameter notificationArn is invalid.")
            out["notification_arn"] = p["NotificationArn"]
        if "NotificationMetadata" in p:
            out["notification_metadata"] = p["NotificationMetadata"] or None
        return out

    def create_hook(self, p: Mapping[str, str]) -> dict:
        group = self._group_by_id(require(p, "ScalingGroupId"))
        require(p, "LifecycleTransition")
        if len(group["hooks"]) >= MAX_HOOKS_PER_GROUP:
            raise RpcError(400, "QuotaExceeded.LifecycleHook", "Lifecycle hook count exceeded the quota.")
        hook_id = new_id("ash")
        name = p.get("LifecycleHookName") or hook_id
        if any(h["name"] == name for h in group["hooks"]):
            raise RpcError(400, "LifecycleHookNameAlreadyExist", "The specified lifecycleHookName already exists.")
        hook = self._hook_fields(p, {"id": hook_id, "name": name, "transition": None, "default_result": "CONTINUE",
                                     "heartbeat_timeout": HEARTBEAT_DEFAULT, "notification_arn": None,
                                     "notification_metadata": None})
        group["hooks"].append(hook)
        return {"LifecycleHookId": hook_id}

    def _find_hook(self, p: Mapping[str, str]) -> tuple[dict, dict]:
        if p.get("LifecycleHookId"):  # ScalingGroupId and LifecycleHookName are then ignored
            for g in self.groups.values():
                for h in g["hooks"]:
                    if h["id"] == p["LifecycleHookId"]:
                        return g, h
            raise RpcError(400, "InvalidLifecycleHookId.NotExist", "The specified lifecycleHookId not exist.")
        group = self._group_by_id(require(p, "ScalingGroupId"))
        for h in group["hooks"]:
            if h["name"] == require(p, "LifecycleHookName"):
                return group, h
        raise RpcError(400, "InvalidLifecycleHookName.NotExist", "The specified lifecycleHookName you provided not exist.")

    def modify_hook(self, p: Mapping[str, str]) -> dict:
        group, hook = self._find_hook(p)
        hook.update(self._hook_fields(p, hook))
        return {}

    def describe_hooks(self, p: Mapping[str, str]) -> dict:
        ids = set(repeat(p, "LifecycleHookId"))
        if p.get("ScalingGroupId"):
            pairs = [(self._group_by_id(p["ScalingGroupId"]), h) for h in self._group_by_id(p["ScalingGroupId"])["hooks"]]
        else:
            pairs = [(g, h) for g in self.groups.values() for h in g["hooks"]]
        pairs = [(g, h) for g, h in pairs if (not ids or h["id"] in ids)
                 and (not p.get("LifecycleHookName") or h["name"] == p["LifecycleHookName"])]
        page = paginate(pairs, p, 50)
        return {"LifecycleHooks": {"LifecycleHook": [self._hook_json(g, h) for g, h in page.pop("items")]}, **page}

    def describe_lifecycle_actions(self, p: Mapping[str, str]) -> dict:
        act = self.activities.activities.get(require(p, "ScalingActivityId"))
        status = p.get("LifecycleActionStatus")
        rows = [] if act is None else [self.activities.actions[t] for t in act["actions"]]
        rows = [a for a in rows if not status or a["status"] == status]
        size = int_param(p, "MaxResults", 10, 1, 50)
        return {"TotalCount": len(rows), "MaxResults": size, "NextToken": "", "LifecycleActions": {"LifecycleAction": [
            {"LifecycleHookId": a["hook_id"], "LifecycleActionToken": a["token"], "LifecycleActionStatus": a["status"],
             "LifecycleActionResult": a["result"] or "", "InstanceIds": {"InstanceId": list(act["instances"])}}
            for a in rows[:size]]}}

    def _pending(self, token: str | None, hook_id: str | None) -> dict:
        self.activities.tick()
        action = self.activities.actions.get(token or "")
        if action is None or action["hook_id"] != hook_id or action["status"] != "Pending":
            raise RpcError(400, "LifecycleHookIdAndLifecycleActionToken.Invalid",
                           "The specified lifecycleActionToken and lifecycleHookId you provided does not match "
                           "any in process lifecycle action.")
        return action

    def complete(self, p: Mapping[str, str]) -> dict:
        action = self._pending(require(p, "LifecycleActionToken"), require(p, "LifecycleHookId"))
        result = p.get("LifecycleActionResult") or "CONTINUE"
        if result not in RESULTS:
            raise invalid("LifecycleActionResult")
        self.activities.end(action, result, "Completed")
        return {}

    def heartbeat(self, p: Mapping[str, str]) -> dict:
        # lower camel case: the SDK's RecordLifecycleActionHeartbeatRequest sends these names
        action = self._pending(require(p, "lifecycleActionToken"), require(p, "lifecycleHookId"))
        hook = self.hook(action["hook_id"]) or {}
        seconds = _heartbeat(p, "heartbeatTimeout") if p.get("heartbeatTimeout") else hook.get(
            "heartbeat_timeout", HEARTBEAT_DEFAULT)
        action["deadline"] = time.time() + seconds * self.time_scale
        action["heartbeats"] += 1
        return {}

    def snapshot(self) -> dict:
        return {"scaling_groups": [{"id": g["id"], "instances": list(g["instances"]),
                                    "hooks": [dict(h) for h in g["hooks"]]} for g in self.groups.values()],
                "lifecycle_actions": self.activities.snapshot()}


def _heartbeat(p: Mapping[str, str], name: str) -> int:
    try:
        return int_param(p, name, HEARTBEAT_DEFAULT, HEARTBEAT_MIN, HEARTBEAT_MAX)
    except RpcError:
        raise invalid(name) from None  # ESS's own code (sic), not the POP gateway's InvalidParameter
