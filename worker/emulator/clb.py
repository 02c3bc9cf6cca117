"""SLB, the Classic Load Balancer (CLB, Version 2014-05-15): load balancers, their VServer groups
and backend servers, answered in the real JSON shapes. All methods run under the emulator's lock."""
from __future__ import annotations

import json
from typing import Callable, Mapping

from .rpc_params import RpcError, iso_minutes, paginate, require

SLB_VERSION = "2014-05-15"
MAX_BACKEND_SERVERS = 20


class ClassicLoadBalancers:
    """The CLB load balancers of one emulator and their VServer groups."""

    def __init__(self, state: dict, created: float):
        self.region = state["region"]
        self.lbs: dict[str, dict] = {}
        self.groups: dict[str, tuple[dict, dict]] = {}  # group id -> (lb, group)
        for lb in state["load_balancers"]:
            lb = {"id": lb["id"], "name": lb["name"], "created": created,
                  "vserver_groups": [dict(g, backend_servers=[dict(s) for s in g["backend_servers"]])
                                     for g in lb["vserver_groups"]]}
            self.lbs[lb["id"]] = lb
            for g in lb["vserver_groups"]:
                self.groups[g["id"]] = (lb, g)
        self.actions: dict[str, Callable] = {
            "DescribeLoadBalancers": self.describe_load_balancers,
            "DescribeVServerGroups": self.describe_vserver_groups,
            "DescribeVServerGroupAttribute": self.describe_vserver_group_attribute,
            "AddVServerGroupBackendServers": self.add_backend_servers,
            "RemoveVServerGroupBackendServers": self.remove_backend_servers,
            "SetVServerGroupAttribute": self.set_vserver_group_attribute,
            "DescribeHealthStatus": self.describe_health_status,
        }

    def lb_of_group(self, group_id: str) -> str | None:
        found = self.groups.get(group_id)
        return found[0]["id"] if found else None

    def _lb_json(self, lb: dict) -> dict:
        return {"LoadBalancerId": lb["id"], "LoadBalancerName": lb["name"], "LoadBalancerStatus": "active",
                "RegionId": self.region, "RegionIdAlias": self.region, "Address": "10.0.0.1",
                "AddressType": "intranet", "AddressIPVersion": "ipv4", "NetworkType": "vpc",
                "PayType": "PayOnDemand", "InternetChargeType": "paybytraffic",
                "MasterZoneId": f"{self.region}-b", "SlaveZoneId": f"{self.region}-c",
                "CreateTime": iso_minutes(lb["created"]), "CreateTimeStamp": int(lb["created"] * 1000)}

    def describe_load_balancers(self, p: Mapping[str, str]) -> dict:
        lbs = list(self.lbs.values())
        if p.get("LoadBalancerId"):
            wanted = {x.strip() for x in p["LoadBalancerId"].split(",") if x.strip()}
            lbs = [lb for lb in lbs if lb["id"] in wanted]
        if p.get("ServerId"):
            sid = p["ServerId"]
            lbs = [lb for lb in lbs if any(s["server_id"] == sid for g in lb["vserver_groups"]
                                           for s in g["backend_servers"])]
        page = paginate(lbs, p, 100, 50)
        return {"LoadBalancers": {"LoadBalancer": [self._lb_json(lb) for lb in page.pop("items")]}, **page}

    def describe_vserver_groups(self, p: Mapping[str, str]) -> dict:
        lb = self.lbs.get(require(p, "LoadBalancerId"))
        if lb is None:
            raise RpcError(404, "InvalidLoadBalancerId.NotFound", "The specified LoadBalancerId does not exist.")
        groups = [{"VServerGroupId": g["id"], "VServerGroupName": g["name"],
                   "AssociatedObjects": {"Listeners": {"Listener": []}, "Rules": {"Rule": []}},
                   "ServerCount": len(g["backend_servers"])} for g in lb["vserver_groups"]]
        return {"VServerGroups": {"VServerGroup": groups}}

    def _group(self, p: Mapping[str, str]) -> tuple[dict, dict]:
        found = self.groups.get(require(p, "VServerGroupId"))
        if found is None:
            raise RpcError(404, "InvalidVServerGroupId.NotFound", "The specified VServerGroupId does not exist.")
        return found

    def _group_json(self, lb: dict, g: dict) -> dict:
        servers = [{"ServerId": s["server_id"], "Port": s["port"], "Weight": s["weight"], "Type": s["type"],
                    "Description": ""} for s in g["backend_servers"]]
        return {"VServerGroupId": g["id"], "VServerGroupName": g["name"], "LoadBalancerId": lb["id"],
                "BackendServers": {"BackendServer": servers}}

    def _changed_json(self, lb: dict, g: dict, named: bool = False) -> dict:
        """What Add/RemoveVServerGroupBackendServers answer (their response models: the group id and
        its servers, no Description); SetVServerGroupAttribute also names the group."""
        out = self._group_json(lb, g)
        del out["LoadBalancerId"]
        if not named:
            del out["VServerGroupName"]
            for s in out["BackendServers"]["BackendServer"]:
                del s["Description"]
        return out

    def describe_vserver_group_attribute(self, p: Mapping[str, str]) -> dict:
        return self._group_json(*self._group(p))

    def describe_health_status(self, p: Mapping[str, str]) -> dict:
        """Each backend's health check verdict (`normal`, `abnormal`, or `unavailable` when
        no check runs), as the state file's `health` sets it; one listener, port 80."""
        lb = self.lbs.get(require(p, "LoadBalancerId"))
        if lb is None:
            raise RpcError(404, "InvalidLoadBalancerId.NotFound", "The specified LoadBalancerId does not exist.")
        if p.get("ListenerPort") not in (None, "", "80"):
            return {"BackendServers": {"BackendServer": []}}
        rows = [{"ServerId": s["server_id"], "Port": s["port"], "ListenerPort": 80, "ServerIp": "",
                 "ServerHealthStatus": s.get("health", "normal")}  # the fields of Alibaba's model
                for g in lb["vserver_groups"] for s in g["backend_servers"]]
        return {"BackendServers": {"BackendServer": rows}}

    @staticmethod
    def _servers(p: Mapping[str, str], need_port: bool) -> list[dict]:
        raw = require(p, "BackendServers")
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
        return self._changed_json(lb, g)

    def remove_backend_servers(self, p: Mapping[str, str]) -> dict:
        lb, g = self._group(p)
        for s in self._servers(p, need_port=False):
            g["backend_servers"] = [x for x in g["backend_servers"]
                                    if not (x["server_id"] == s["server_id"]
                                            and (s["port"] is None or x["port"] == s["port"]))]
        return self._changed_json(lb, g)

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
        return self._changed_json(lb, g, named=True)


    def snapshot(self) -> list[dict]:
        return [{"id": lb["id"], "name": lb["name"],
                 "vserver_groups": [{"id": g["id"], "name": g["name"],
                                     "backend_servers": [dict(s) for s in g["backend_servers"]]}
                                    for g in lb["vserver_groups"]]}
                for lb in self.lbs.values()]
