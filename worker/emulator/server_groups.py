"""ALB (Version 2020-06-16) and NLB (Version 2022-04-30) server groups with their job-based changes.

`AddServersToServerGroup`, `RemoveServersFromServerGroup` and `UpdateServerGroupServersAttribute`
answer a `JobId` at once; the change is applied when the job ends, `job_seconds` later (lazily,
on the next call, like the instances' transitions). Meanwhile the entries show `Status`
`Adding` / `Removing` / `Configuring`, and any other change to that group is refused with
400 `IncorrectStatus.ServerGroup` (ALB) / `IncorrectStatus.serverGroup` (NLB), as the
services do. Jobs are read with ALB `ListAsynJobs(JobIds.N)` and NLB `GetJobStatus(JobId)`.
List parameters arrive flattened: `Servers.1.ServerId`, `Servers.1.Port`, ... (ALB in the
query, NLB in the form body; the server merges both). At most 200 servers per call.
Removing a server that is not in the group, or adding one that is, is refused (404
`ResourceNotFound.BackendServer` / 400 `ResourceAlreadyAssociated.BackendServer`): the docs
do not say, so the emulator takes the stricter reading. All methods run under the
emulator's lock.
"""
from __future__ import annotations

import time
import uuid
from typing import Callable, Mapping

ALB_VERSION = "2020-06-16"
NLB_VERSION = "2022-04-30"
MAX_SERVERS = 200
MAX_RESULTS = 100
_TYPES = {"ecs": "Ecs", "eni": "Eni", "eci": "Eci", "ip": "Ip"}


class ServerGroupService:
    """One product's server groups (`kind` "alb" or "nlb")."""

    def __init__(self, kind: str, groups: list[dict], error: type, job_seconds: float = 0.5):
        self.kind = kind
        self._error = error  # rpc.RpcError (status, code, message)
        self.job_seconds = job_seconds
        self.groups: dict[str, dict] = {}
        for g in groups:
            self.groups[g["id"]] = {"id": g["id"], "load_balancer_id": g.get("load_balancer_id"),
                                    "servers": [dict(s) for s in g["servers"]], "job": None,
                                    **{k: g[k] for k in ("listener_id", "health_check") if k in g}}
        self.jobs: dict[str, dict] = {}
        self.busy_code = "IncorrectStatus.ServerGroup" if kind == "alb" else "IncorrectStatus.serverGroup"
        self.actions: dict[str, Callable[[Mapping[str, str]], dict]] = {
            "ListServerGroups": self.list_server_groups,
            "ListServerGroupServers": self.list_server_group_servers,
            "AddServersToServerGroup": self.add_servers,
            "RemoveServersFromServerGroup": self.remove_servers,
            "UpdateServerGroupServersAttribute": self.update_servers,
        }
        if kind == "alb":
            self.actions["ListAsynJobs"] = self.list_asyn_jobs
        else:
            self.actions["GetJobStatus"] = self.get_job_status

    # ------------------------------------------------------------------ jobs

    def _finish_due_jobs(self, now: float | None = None) -> None:
        now = now or time.time()
        for job in self.jobs.values():
            if job["status"] == "Processing" and now >= job["due"]:
                job["apply"]()
                job["status"] = "Succeeded"
                self.groups[job["group"]]["job"] = None

    def _start_job(self, api: str, group: dict, apply: Callable[[], None]) -> dict:
        job_id = str(uuid.uuid4())
        self.jobs[job_id] = {"id": job_id, "api": api, "group": group["id"], "status": "Processing",
                             "due": time.time() + self.job_seconds, "apply": apply, "created": time.time()}
        group["job"] = job_id
        self._finish_due_jobs()
        return {"JobId": job_id}

    # ------------------------------------------------------------------ parameters

    def _bad(self, name: str) -> Exception:
        return self._error(400, "InvalidParameter", f"The param {name} is invalid.")

    def _group(self, p: Mapping[str, str]) -> dict:
        gid = p.get("ServerGroupId")
        if not gid:
            raise self._error(400, "MissingParameter", "The input parameter ServerGroupId is mandatory.")
        group = self.groups.get(gid)
        if group is None:
            raise self._error(404, "ResourceNotFound.ServerGroup", f"The specified resource {gid} is not found.")
        return group

    def _servers(self, p: Mapping[str, str], need_weight: bool = False) -> list[dict]:
        rows: dict[int, dict] = {}
        for k, v in p.items():
            parts = k.split(".")
            if len(parts) == 3 and parts[0] == "Servers" and parts[1].isdigit():
                rows.setdefault(int(parts[1]), {})[parts[2]] = v
        if not rows:
            raise self._error(400, "MissingParameter", "The input parameter Servers is mandatory.")
        if len(rows) > MAX_SERVERS:
            raise self._error(400, "QuotaExceeded.ServersNum",
                              f"The quota of servers per call is exceeded (at most {MAX_SERVERS}).")
        out = []
        for _, row in sorted(rows.items()):
            if not row.get("ServerId"):
                raise self._bad("Servers.N.ServerId")
            stype = (row.get("ServerType") or "").lower()
            if stype not in _TYPES:
                raise self._bad("Servers.N.ServerType")
            try:
                port = int(row["Port"])
                weight = int(row["Weight"]) if row.get("Weight") not in (None, "") else None
            except (KeyError, ValueError):
                raise self._bad("Servers.N.Port") from None
            lowest = 0 if self.kind == "nlb" else 1  # NLB's Port is 0..65535: 0 for an all-port group
            if not lowest <= port <= 65535 or (weight is not None and not 0 <= weight <= 100):
                raise self._bad("Servers.N.Port" if not lowest <= port <= 65535 else "Servers.N.Weight")
            if need_weight and weight is None:
                raise self._bad("Servers.N.Weight")
            out.append({"server_id": row["ServerId"], "port": port, "weight": weight, "type": stype})
        return out

    def _check_free(self, group: dict) -> None:
        self._finish_due_jobs()
        if group["job"] is not None:
            raise self._error(400, self.busy_code, f"The status of {group['id']} is incorrect (Configuring).")

    def _page(self, items: list, p: Mapping[str, str]) -> tuple[list, dict]:
        try:
            size = int(p.get("MaxResults") or 20)
            start = int(p.get("NextToken") or 0)
        except ValueError:
            raise self._bad("NextToken") from None
        if not 1 <= size <= MAX_RESULTS:
            raise self._bad("MaxResults")
        page = items[start:start + size]
        more = start + size < len(items)
        return page, {"MaxResults": size, "TotalCount": len(items),
                      **({"NextToken": str(start + size)} if more else {})}

    # ------------------------------------------------------------------ reads

    def list_server_groups(self, p: Mapping[str, str]) -> dict:
        self._finish_due_jobs()
        wanted = {v for k, v in p.items() if k.startswith("ServerGroupIds.")}
        groups = [g for g in self.groups.values() if not wanted or g["id"] in wanted]
        page, meta = self._page(groups, p)
        return {"ServerGroups": [{"ServerGroupId": g["id"], "ServerGroupName": g["id"],
                                  "ServerGroupStatus": "Configuring" if g["job"] else "Available",
                                  "ServerCount": len(g["servers"]),
                                  "RelatedLoadBalancerIds": [g["load_balancer_id"]] if g["load_balancer_id"] else []}
                                 for g in page], **meta}

    def _entry_status(self, group: dict, s: dict) -> str:
        job = self.jobs.get(group["job"]) if group["job"] else None
        if job is None:
            return "Available"
        key = (s["server_id"], s["port"])
        if key in job.get("targets", ()):
            return {"RemoveServersFromServerGroup": "Removing", "AddServersToServerGroup": "Adding"}.get(
                job["api"], "Configuring")
        return "Available"

    def list_server_group_servers(self, p: Mapping[str, str]) -> dict:
        self._finish_due_jobs()
        ids = {v for k, v in p.items() if k.startswith("ServerIds.")}
        groups = [self._group(p)] if p.get("ServerGroupId") else list(self.groups.values())
        rows = [(g, s) for g in groups for s in g["servers"] if not ids or s["server_id"] in ids]
        page, meta = self._page(rows, p)
        return {"Servers": [{"ServerGroupId": g["id"], "ServerId": s["server_id"], "ServerIp": "",
                             "ServerType": _TYPES[s["type"]], "Port": s["port"], "Weight": s["weight"],
                             "Description": "", "Status": self._entry_status(g, s)} for g, s in page], **meta}

    def list_asyn_jobs(self, p: Mapping[str, str]) -> dict:
        self._finish_due_jobs()
        wanted = [v for k, v in sorted(p.items()) if k.startswith("JobIds.")]
        jobs = [self.jobs[j] for j in wanted if j in self.jobs] if wanted else list(self.jobs.values())
        page, meta = self._page(jobs, p)
        return {"Jobs": [{"Id": j["id"], "ApiName": j["api"], "Status": j["status"], "ResourceType": "servergroup",
                          "ResourceId": j["group"], "CreateTime": int(j["created"] * 1000)} for j in page], **meta}

    def get_job_status(self, p: Mapping[str, str]) -> dict:
        self._finish_due_jobs()
        job = self.jobs.get(p.get("JobId") or "")
        if job is None:
            raise self._error(404, "ResourceNotFound.JobId", "The specified resource of JobId is not found.")
        return {"Status": job["status"]}

    # ------------------------------------------------------------------ changes

    def _dry_run(self, p: Mapping[str, str]) -> None:
        if p.get("DryRun") == "true":
            raise self._error(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")

    def add_servers(self, p: Mapping[str, str]) -> dict:
        group = self._group(p)
        servers = self._servers(p)
        self._check_free(group)
        present = {(x["server_id"], x["port"]) for x in group["servers"]}
        if any((s["server_id"], s["port"]) in present for s in servers):
            raise self._error(400, "ResourceAlreadyAssociated.BackendServer",
                              "The specified BackendServer is already in the server group.")
        self._dry_run(p)

        def apply() -> None:
            for s in servers:
                if not any(x["server_id"] == s["server_id"] and x["port"] == s["port"] for x in group["servers"]):
                    group["servers"].append({"server_id": s["server_id"], "port": s["port"],
                                             "weight": 100 if s["weight"] is None else s["weight"],
                                             "type": s["type"]})
        out = self._start_job("AddServersToServerGroup", group, apply)
        self.jobs[out["JobId"]]["targets"] = {(s["server_id"], s["port"]) for s in servers}
        return out

    def remove_servers(self, p: Mapping[str, str]) -> dict:
        group = self._group(p)
        gone = {(s["server_id"], s["port"]) for s in self._servers(p)}
        self._check_free(group)
        if gone - {(x["server_id"], x["port"]) for x in group["servers"]}:
            raise self._error(404, "ResourceNotFound.BackendServer", "The specified BackendServer is not found.")
        self._dry_run(p)

        def apply() -> None:
            group["servers"] = [x for x in group["servers"] if (x["server_id"], x["port"]) not in gone]
        out = self._start_job("RemoveServersFromServerGroup", group, apply)
        self.jobs[out["JobId"]]["targets"] = gone
        return out

    def update_servers(self, p: Mapping[str, str]) -> dict:
        group = self._group(p)
        servers = self._servers(p)
        self._check_free(group)
        self._dry_run(p)

        def apply() -> None:
            for s in servers:
                for x in group["servers"]:
                    if x["server_id"] == s["server_id"] and x["port"] == s["port"] and s["weight"] is not None:
                        x["weight"] = s["weight"]
        return self._start_job("UpdateServerGroupServersAttribute", group, apply)

    # ------------------------------------------------------------------ inspection

    def snapshot(self) -> list[dict]:
        self._finish_due_jobs()
        out = []
        for g in self.groups.values():
            item = {"id": g["id"], "servers": [dict(s) for s in g["servers"]],
                    **{k: g[k] for k in ("listener_id", "health_check") if k in g}}
            if g["load_balancer_id"]:
                item["load_balancer_id"] = g["load_balancer_id"]
            out.append(item)
        return out
