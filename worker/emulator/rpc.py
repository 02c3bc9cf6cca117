"""ECS (Version 2014-05-26) and SLB (Version 2014-05-15) RPC actions, answered in the real JSON shapes.

Instances change state lazily: StartInstance sets Starting plus a due time, and any later read
applies the transition (Starting -> Running after `start_delay_seconds`, Stopping -> Stopped after
`stop_delay_seconds`), so no timer threads exist. All methods run under the emulator's lock.

Unknown actions answer what the POP gateway answers: 404 `InvalidAction.NotFound`.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Callable, Mapping

from .server_groups import ALB_VERSION, NLB_VERSION, ServerGroupService
from .system_events import SystemEvents

ECS_VERSION = "2014-05-26"
SLB_VERSION = "2014-05-15"
CMS_VERSION = "2019-01-01"  # CloudMonitor: its actions live in cms.py
PRODUCTS = {ECS_VERSION: "ecs", SLB_VERSION: "slb", CMS_VERSION: "cms", ALB_VERSION: "alb",
            NLB_VERSION: "nlb"}
MAX_BACKEND_SERVERS = 20


class RpcError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def invalid_action(action: str) -> RpcError:
    return RpcError(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")


def _missing(name: str) -> RpcError:
    return RpcError(400, "MissingParameter",
                    f"The input parameter \"{name}\" that is mandatory for processing this request is not supplied.")


def _require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise _missing(name)
    return value


def _int(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        n = int(raw)
    except ValueError:
        raise RpcError(400, "InvalidParameter", f"The specified parameter \"{name}\" is not valid.") from None
    if not lo <= n <= hi:
        raise RpcError(400, "InvalidParameter", f"The specified parameter \"{name}\" is not valid.")
    return n


def _repeat(params: Mapping[str, str], prefix: str) -> list[str]:
    """Values of prefix.1, prefix.2, ... in index order."""
    found = []
    for k, v in params.items():
        if k.startswith(prefix + "."):
            idx = k[len(prefix) + 1:]
            if idx.isdigit():
                found.append((int(idx), v))
    return [v for _, v in sorted(found)]


def _tag_filters(params: Mapping[str, str]) -> list[tuple[str, str | None]]:
    out = []
    for n in range(1, 21):
        key = params.get(f"Tag.{n}.Key")
        if key:
            out.append((key, params.get(f"Tag.{n}.Value")))
    return out


def _page(items: list, params: Mapping[str, str], max_size: int, default_size: int = 10) -> dict:
    number = _int(params, "PageNumber", 1, 1, 10**9)
    size = _int(params, "PageSize", default_size, 1, max_size)
    return {"items": items[(number - 1) * size: number * size], "TotalCount": len(items),
            "PageNumber": number, "PageSize": size}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


class Cloud:
    """Instances and load balancers of one emulator."""

    def __init__(self, state: dict):
        self.region = state["region"]
        self.account_id = state["account_id"]
        # Where fleet events go (fleet_events.EventBus.deliver); None: nowhere.
        self.deliver: Callable[[dict], object] | None = None
        self.start_delay = state["start_delay_seconds"]
        self.stop_delay = state["stop_delay_seconds"]
        created = time.time()
        self.instances: dict[str, dict] = {}
        for i in state["instances"]:
            inst = dict(i, tags=dict(i["tags"]), locks=list(i["locks"]), due=None, created=created)
            self.instances[i["id"]] = inst
        self.lbs: dict[str, dict] = {}
        self.groups: dict[str, tuple[dict, dict]] = {}  # group id -> (lb, group)
        for lb in state["load_balancers"]:
            lb = {"id": lb["id"], "name": lb["name"], "created": created,
                  "vserver_groups": [dict(g, backend_servers=[dict(s) for s in g["backend_servers"]])
                                     for g in lb["vserver_groups"]]}
            self.lbs[lb["id"]] = lb
            for g in lb["vserver_groups"]:
                self.groups[g["id"]] = (lb, g)
        # Through a lambda: whatever `publish_event` is when an event changes (tests spy on it).
        self.system_events = SystemEvents(state["instances"], lambda *a: self.publish_event(*a),
                                          self._platform_reboot, RpcError)
        job_seconds = state.get("job_delay_seconds", 0.5)
        self.alb = ServerGroupService("alb", state.get("alb_server_groups", []), RpcError, job_seconds)
        self.nlb = ServerGroupService("nlb", state.get("nlb_server_groups", []), RpcError, job_seconds)
        self.actions: dict[str, dict[str, Callable]] = {
            "ecs": {
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
            },
            "slb": {
                "DescribeLoadBalancers": self.describe_load_balancers,
                "DescribeVServerGroups": self.describe_vserver_groups,
                "DescribeVServerGroupAttribute": self.describe_vserver_group_attribute,
                "AddVServerGroupBackendServers": self.add_backend_servers,
                "RemoveVServerGroupBackendServers": self.remove_backend_servers,
                "SetVServerGroupAttribute": self.set_vserver_group_attribute,
            },
            "alb": self.alb.actions,
            "nlb": self.nlb.actions,
        }

    def lb_of_group(self, group_id: str) -> str | None:
        found = self.groups.get(group_id)
        return found[0]["id"] if found else None

    def call(self, product: str, action: str, params: Mapping[str, str]) -> dict:
        handler = self.actions.get(product, {}).get(action)
        if handler is None:
            raise invalid_action(action)
        self.system_events.tick()
        return handler(params)

    # ------------------------------------------------------------------ ECS

    def _settle(self, inst: dict, now: float | None = None) -> dict:
        now = now or time.time()
        due = inst["due"]
        while due is not None and now >= due[1]:  # (status, at[, next due]): a reboot chains two
            inst["status"], inst["due"] = due[0], (due[2] if len(due) > 2 else None)
            due = inst["due"]
            self._state_changed(inst)
        return inst

    def _instance(self, instance_id: str) -> dict:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise RpcError(404, "InvalidInstanceId.NotFound", "The specified InstanceId does not exist.")
        return self._settle(inst)

    def _all_instances(self) -> list[dict]:
        now = time.time()
        return [self._settle(i, now) for i in self.instances.values()]

    def _instance_json(self, i: dict) -> dict:
        return {
            "InstanceId": i["id"], "InstanceName": i["name"], "HostName": i["name"], "RegionId": self.region,
            "ZoneId": i["zone_id"], "Status": i["status"], "InstanceType": i["instance_type"],
            "InstanceChargeType": "PostPaid", "InternetChargeType": "PayByTraffic",
            "SpotStrategy": "SpotAsPriceGo" if i["spot"] else "NoSpot", "SpotPriceLimit": 0.0,
            "StoppedMode": i["stopped_mode"] if i["status"] == "Stopped" else "Not-applicable",
            "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in i["tags"].items()]},
            "OperationLocks": {"LockReason": [{"LockReason": r} for r in i["locks"]]},
            "CreationTime": _iso(i["created"]), "ExpiredTime": "2099-12-31T15:59Z",
            "InstanceNetworkType": "vpc", "Cpu": 2, "Memory": 8192, "OSType": "linux",
        }

    @staticmethod
    def _matches_tags(inst: dict, filters: list) -> bool:
        for key, value in filters:
            if key not in inst["tags"] or (value is not None and inst["tags"][key] != value):
                return False
        return True

    def describe_instances(self, p: Mapping[str, str]) -> dict:
        instances = self._all_instances()
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
        filters = _tag_filters(p)
        instances = [i for i in instances if self._matches_tags(i, filters)]
        page = _page(instances, p, 100)
        return {"Instances": {"Instance": [self._instance_json(i) for i in page.pop("items")]}, **page}

    def describe_instance_status(self, p: Mapping[str, str]) -> dict:
        instances = self._all_instances()
        ids = _repeat(p, "InstanceId")
        if ids:
            wanted = set(ids)
            instances = [i for i in instances if i["id"] in wanted]
        page = _page(instances, p, 50)
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
            raise RpcError(403, "IncorrectInstanceStatus",
                           "The current status of the resource does not support this operation.")

    def _start(self, inst: dict, dry_run: bool) -> str:
        self._check_locks(inst)
        if inst["status"] != "Stopped":
            raise RpcError(403, "IncorrectInstanceStatus",
                           "The current status of the resource does not support this operation.")
        if dry_run:
            raise RpcError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
        previous = inst["status"]
        inst["status"], inst["due"] = "Starting", ("Running", time.time() + self.start_delay)
        self._state_changed(inst)
        self._settle(inst)
        return previous

    def _stop(self, inst: dict, p: Mapping[str, str], dry_run: bool) -> str:
        self._check_locks(inst)
        if inst["status"] != "Running":
            raise RpcError(403, "IncorrectInstanceStatus",
                           "The current status of the resource does not support this operation.")
        if dry_run:
            raise RpcError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
        mode = p.get("StoppedMode") or "KeepCharging"
        if mode not in ("KeepCharging", "StopCharging"):
            raise RpcError(400, "InvalidParameter", "The specified parameter \"StoppedMode\" is not valid.")
        previous = inst["status"]
        inst["stopped_mode"] = mode
        inst["status"], inst["due"] = "Stopping", ("Stopped", time.time() + self.stop_delay)
        self._state_changed(inst)
        self._settle(inst)
        return previous

    def start_instance(self, p: Mapping[str, str]) -> dict:
        self._start(self._instance(_require(p, "InstanceId")), p.get("DryRun") == "true")
        return {}

    def stop_instance(self, p: Mapping[str, str]) -> dict:
        self._stop(self._instance(_require(p, "InstanceId")), p, p.get("DryRun") == "true")
        return {}

    def _batch(self, p: Mapping[str, str], op: Callable[[dict], str], required: str) -> dict:
        ids = _repeat(p, "InstanceId")
        if not ids:
            raise _missing("InstanceId.N")
        if len(ids) > 100:
            raise RpcError(400, "InvalidParameter", "The specified parameter \"InstanceId.N\" is not valid.")
        # AllTogether (the default) is all-or-nothing: validate every instance before changing any.
        if p.get("BatchOptimization", "AllTogether") != "SuccessFirst":
            for iid in ids:
                inst = self._instance(iid)
                self._check_locks(inst)
                if inst["status"] != required:
                    raise RpcError(403, "IncorrectInstanceStatus",
                                   "The current status of the resource does not support this operation.")
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
        inst = self._instance(_require(p, "InstanceId"))
        self._check_locks(inst)
        if inst["status"] != "Running":
            raise RpcError(403, "IncorrectInstanceStatus",
                           "The current status of the resource does not support this operation.")
        if p.get("DryRun") == "true":
            raise RpcError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
        self._begin_reboot(inst)
        self.system_events.owner_rebooted(inst["id"])
        return {}

    def redeploy_instance(self, p: Mapping[str, str]) -> dict:
        """RedeployInstance (asynchronous, answers a TaskId): Running -> Stopping -> Starting ->
        Running, Stopped -> Starting -> Running; settles Scheduled SystemMaintenance.Reboot /
        .Redeploy events (they become Avoided). No DryRun parameter, as in the API."""
        inst = self._instance(_require(p, "InstanceId"))
        if "Security" in inst["locks"]:
            self._check_locks(inst)
        if inst["status"] not in ("Running", "Stopped"):
            raise RpcError(403, "IncorrectInstanceStatus",
                           "The current status of the resource does not support this operation.")
        if inst["status"] == "Running":  # documented: Running enters Stopping
            now = time.time()
            inst["status"] = "Stopping"
            inst["due"] = ("Starting", now + self.stop_delay, ("Running", now + self.stop_delay + self.start_delay))
        else:
            inst["status"], inst["due"] = "Starting", ("Running", time.time() + self.start_delay)
        self._state_changed(inst)
        self.system_events.owner_redeployed(inst["id"])
        return {"TaskId": f"t-{inst['id'][-8:]}{int(time.time() * 1000) % 10**8}"}

    def _begin_reboot(self, inst: dict) -> None:
        now = time.time()
        inst["status"], inst["due"] = "Starting", ("Running", now + self.stop_delay + self.start_delay)
        self._state_changed(inst)
        self._settle(inst, now)

    def _platform_reboot(self, instance_id: str) -> None:
        inst = self.instances.get(instance_id)
        if inst is not None and self._settle(inst)["status"] == "Running":
            self._begin_reboot(inst)

    def describe_instance_history_events(self, p: Mapping[str, str]) -> dict:
        return self.system_events.describe(p, _page)

    def describe_tags(self, p: Mapping[str, str]) -> dict:
        instances = self._all_instances()
        if p.get("ResourceType") and p["ResourceType"].lower() != "instance":
            instances = []
        if p.get("ResourceId"):
            instances = [i for i in instances if i["id"] == p["ResourceId"]]
        filters = _tag_filters(p)
        counts: dict[tuple[str, str], int] = {}
        for i in instances:
            for k, v in i["tags"].items():
                if not filters or any(k == fk and (fv is None or v == fv) for fk, fv in filters):
                    counts[(k, v)] = counts.get((k, v), 0) + 1
        tags = [{"TagKey": k, "TagValue": v, "ResourceTypeCount": {"Instance": n}}
                for (k, v), n in sorted(counts.items())]
        page = _page(tags, p, 100, 50)
        return {"Tags": {"Tag": page.pop("items")}, **page}

    # ------------------------------------------------------------------ SLB

    def _lb_json(self, lb: dict) -> dict:
        return {"LoadBalancerId": lb["id"], "LoadBalancerName": lb["name"], "LoadBalancerStatus": "active",
                "RegionId": self.region, "RegionIdAlias": self.region, "Address": "10.0.0.1",
                "AddressType": "intranet", "AddressIPVersion": "ipv4", "NetworkType": "vpc",
                "PayType": "PayOnDemand", "InternetChargeType": "paybytraffic",
                "MasterZoneId": f"{self.region}-b", "SlaveZoneId": f"{self.region}-c",
                "CreateTime": _iso(lb["created"]), "CreateTimeStamp": int(lb["created"] * 1000)}

    def describe_load_balancers(self, p: Mapping[str, str]) -> dict:
        lbs = list(self.lbs.values())
        if p.get("LoadBalancerId"):
            wanted = {x.strip() for x in p["LoadBalancerId"].split(",") if x.strip()}
            lbs = [lb for lb in lbs if lb["id"] in wanted]
        if p.get("ServerId"):
            sid = p["ServerId"]
            lbs = [lb for lb in lbs if any(s["server_id"] == sid for g in lb["vserver_groups"]
                                           for s in g["backend_servers"])]
        page = _page(lbs, p, 100, 50)
        return {"LoadBalancers": {"LoadBalancer": [self._lb_json(lb) for lb in page.pop("items")]}, **page}

    def describe_vserver_groups(self, p: Mapping[str, str]) -> dict:
        lb = self.lbs.get(_require(p, "LoadBalancerId"))
        if lb is None:
            raise RpcError(404, "InvalidLoadBalancerId.NotFound", "The specified LoadBalancerId does not exist.")
        groups = [{"VServerGroupId": g["id"], "VServerGroupName": g["name"],
                   "AssociatedObjects": {"Listeners": {"Listener": []}, "Rules": {"Rule": []}},
                   "ServerCount": len(g["backend_servers"])} for g in lb["vserver_groups"]]
        return {"VServerGroups": {"VServerGroup": groups}}

    def _group(self, p: Mapping[str, str]) -> tuple[dict, dict]:
        found = self.groups.get(_require(p, "VServerGroupId"))
        if found is None:
            raise RpcError(404, "InvalidVServerGroupId.NotFound", "The specified VServerGroupId does not exist.")
        return found

    def _group_json(self, lb: dict, g: dict) -> dict:
        servers = [{"ServerId": s["server_id"], "Port": s["port"], "Weight": s["weight"], "Type": s["type"],
                    "Description": ""} for s in g["backend_servers"]]
        return {"VServerGroupId": g["id"], "VServerGroupName": g["name"], "LoadBalancerId": lb["id"],
                "BackendServers": {"BackendServer": servers}}

    def describe_vserver_group_attribute(self, p: Mapping[str, str]) -> dict:
        return self._group_json(*self._group(p))

    @staticmethod
    def _servers(p: Mapping[str, str], need_port: bool) -> list[dict]:
        raw = _require(p, "BackendServers")
        bad = RpcError(400, "InvalidParameter", "The specified parameter \"BackendServers\" is not valid.")
        try:
            items = json.loads(raw)
        except ValueError:
            raise bad from None
        if not isinstance(items, list) or not items:
            raise bad
        if len(items) > MAX_BACKEND_SERVERS:
            raise RpcError(400, "TooManyBackendServers",
                           f"The number of backend servers exceeds the limit of {MAX_BACKEND_SERVERS}.")
        out = []
        for it in items:
            if not isinstance(it, dict) or not isinstance(it.get("ServerId"), str) or not it["ServerId"]:
                raise bad
            try:
                port = int(it["Port"]) if it.get("Port") not in (None, "") else None
                weight = int(it["Weight"]) if it.get("Weight") not in (None, "") else None
            except (TypeError, ValueError):
                raise bad from None
            if (need_port and port is None) or (port is not None and not 1 <= port <= 65535) or \
                    (weight is not None and not 0 <= weight <= 100):
                raise bad
            out.append({"server_id": it["ServerId"], "port": port, "weight": weight,
                        "type": it.get("Type") or "ecs"})
        return out

    def add_backend_servers(self, p: Mapping[str, str]) -> dict:
        lb, g = self._group(p)
        for s in self._servers(p, need_port=True):
            existing = next((x for x in g["backend_servers"]
                             if x["server_id"] == s["server_id"] and x["port"] == s["port"]), None)
            if existing is None:
                g["backend_servers"].append({"server_id": s["server_id"], "port": s["port"],
                                             "weight": 100 if s["weight"] is None else s["weight"],
                                             "type": s["type"]})
        return self._group_json(lb, g)

    def remove_backend_servers(self, p: Mapping[str, str]) -> dict:
        lb, g = self._group(p)
        for s in self._servers(p, need_port=False):
            g["backend_servers"] = [x for x in g["backend_servers"]
                                    if not (x["server_id"] == s["server_id"]
                                            and (s["port"] is None or x["port"] == s["port"]))]
        return self._group_json(lb, g)

    def set_vserver_group_attribute(self, p: Mapping[str, str]) -> dict:
        lb, g = self._group(p)
        if p.get("VServerGroupName"):
            g["name"] = p["VServerGroupName"]
        if p.get("BackendServers"):
            for s in self._servers(p, need_port=False):
                for x in g["backend_servers"]:
                    if x["server_id"] == s["server_id"] and (s["port"] is None or x["port"] == s["port"]):
                        if s["weight"] is not None:
                            x["weight"] = s["weight"]
        return self._group_json(lb, g)

    # ------------------------------------------------------------------ fleet events

    def publish_event(self, name: str, instance_id: str, content: dict, level: str = "INFO") -> None:
        """The one entry point for fleet events: build the CloudMonitor envelope and deliver it to
        the queues of every enabled rule that matches it (fleet_events.py). Lock held."""
        from .fleet_events import envelope

        if self.deliver is not None:
            self.deliver(envelope(name, instance_id, content, level, self.region, self.account_id))

    def _state_changed(self, inst: dict) -> None:
        self.publish_event("Instance:StateChange", inst["id"],
                           {"resourceId": inst["id"], "resourceType": "ALIYUN::ECS::Instance",
                            "state": inst["status"]})

    # ------------------------------------------------------------------ inspection

    def snapshot(self) -> dict:
        self.system_events.tick()
        instances = [{"id": i["id"], "status": i["status"], "tags": dict(i["tags"]), "spot": i["spot"],
                      "locks": list(i["locks"]), "stopped_mode": i["stopped_mode"],
                      "scheduled_events": self.system_events.snapshot(i["id"])}
                     for i in self._all_instances()]
        lbs = [{"id": lb["id"], "name": lb["name"],
                "vserver_groups": [{"id": g["id"], "name": g["name"],
                                    "backend_servers": [dict(s) for s in g["backend_servers"]]}
                                   for g in lb["vserver_groups"]]}
               for lb in self.lbs.values()]
        return {"instances": instances, "load_balancers": lbs,
                "alb_server_groups": self.alb.snapshot(), "nlb_server_groups": self.nlb.snapshot()}
