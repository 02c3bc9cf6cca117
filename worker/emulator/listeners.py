"""ALB (2020-06-16) and NLB (2022-04-30) listeners, as far as their health checks go:
`ListListeners` and `GetListenerHealthStatus`, over one product's `ServerGroupService`.

Each server group with a `load_balancer_id` is served by one listener of that load balancer
(state `listener_id`, default `lsn-<group id>`; port 80) that forwards to it — ALB through the
listener's default action, NLB through the listener's `ServerGroupId`. The group's health
check (state `health_check`, default on) judges each server by its state `health`
(`Healthy`, the default, `Unhealthy` or `Initial`). `GetListenerHealthStatus` lists, per
server group of the listener, only the servers not normal (`NonNormalServers`, with Alibaba's
`Status` values): `Unhealthy` / `Initial` as set, `Unused` for weight 0, and `Unavailable` for
every server of a group whose check is off (ALB `HealthCheckEnabled` "on"/"off", NLB
`HeathCheckEnabled` true/false — Alibaba's spelling). Page sizes as documented: ALB
`GetListenerHealthStatus` 1..30, the others 1..100. Runs under the emulator's lock.
"""
from __future__ import annotations

from typing import Mapping

SERVER_HEALTH = ("Healthy", "Unhealthy", "Initial")  # the state's `health` of an ALB/NLB server
LISTENER_PORT = 80
_PAGE_MAX = {("alb", "GetListenerHealthStatus"): 30}


class Listeners:
    """The listeners of one product's server groups (`service`: a `ServerGroupService`)."""

    def __init__(self, service) -> None:
        self.service = service
        self.kind = service.kind
        service.actions["ListListeners"] = self.list_listeners
        service.actions["GetListenerHealthStatus"] = self.get_listener_health_status

    def _all(self) -> list[dict]:
        return [{"id": g.get("listener_id") or f"lsn-{g['id']}", "lb": g["load_balancer_id"], "group": g}
                for g in self.service.groups.values() if g.get("load_balancer_id")]

    def _page(self, action: str, items: list, p: Mapping[str, str]) -> tuple[list, dict]:
        try:
            size = int(p.get("MaxResults") or 20)
            start = int(p.get("NextToken") or 0)
        except ValueError:
            raise self.service._bad("NextToken") from None
        if not 1 <= size <= _PAGE_MAX.get((self.kind, action), 100):
            raise self.service._bad("MaxResults")
        more = start + size < len(items)
        return items[start:start + size], {"MaxResults": size, "TotalCount": len(items),
                                           **({"NextToken": str(start + size)} if more else {})}

    def list_listeners(self, p: Mapping[str, str]) -> dict:
        lbs = {v for k, v in p.items() if k.startswith("LoadBalancerIds.")}
        ids = {v for k, v in p.items() if k.startswith("ListenerIds.")}
        found = [x for x in self._all() if (not lbs or x["lb"] in lbs) and (not ids or x["id"] in ids)]
        page, meta = self._page("ListListeners", found, p)
        return {"Listeners": [self._listener_json(x) for x in page], **meta}

    def _listener_json(self, x: dict) -> dict:
        out = {"ListenerId": x["id"], "LoadBalancerId": x["lb"], "ListenerPort": LISTENER_PORT,
               "ListenerStatus": "Running"}
        if self.kind == "alb":
            return {**out, "ListenerProtocol": "HTTP", "DefaultActions": [
                {"Type": "ForwardGroup",
                 "ForwardGroupConfig": {"ServerGroupTuples": [{"ServerGroupId": x["group"]["id"]}]}}]}
        return {**out, "ListenerProtocol": "TCP", "ServerGroupId": x["group"]["id"]}

    def get_listener_health_status(self, p: Mapping[str, str]) -> dict:
        self.service._finish_due_jobs()
        lid = p.get("ListenerId")
        if not lid:
            raise self.service._error(400, "MissingParameter", "The input parameter ListenerId is mandatory.")
        x = next((x for x in self._all() if x["id"] == lid), None)
        if x is None:
            raise self.service._error(404, "ResourceNotFound.Listener", f"The specified resource {lid} is not found.")
        group = x["group"]
        checked = group.get("health_check", True)
        sick, meta = self._page("GetListenerHealthStatus", [s for s in group["servers"] if _status(s, checked)], p)
        info = {"ServerGroupId": group["id"], "NonNormalServers": [
            {"ServerId": s["server_id"], "ServerIp": "", "Port": s["port"], "Status": _status(s, checked)}
            for s in sick]}
        if self.kind == "alb":
            info.update(ActionType="ForwardGroup", HealthCheckEnabled="on" if checked else "off",
                        ServerCount=len(group["servers"]))
        else:
            info["HeathCheckEnabled"] = checked
        status = {"ListenerId": lid, "ListenerPort": LISTENER_PORT,
                  "ListenerProtocol": "HTTP" if self.kind == "alb" else "TCP", "ServerGroupInfos": [info]}
        out = {"ListenerHealthStatus": [status], **({"NextToken": meta["NextToken"]} if "NextToken" in meta else {})}
        if self.kind == "alb":
            return {**out, **({"RuleHealthStatus": []} if p.get("IncludeRule") == "true" else {})}
        return {**out, "MaxResults": meta["MaxResults"], "TotalCount": meta["TotalCount"]}


def _status(server: dict, checked: bool) -> str | None:
    """The server's `NonNormalServers` status, or None when it is normal (not listed)."""
    if not checked:
        return "Unavailable"
    if int(server.get("weight") or 0) == 0:
        return "Unused"
    health = server.get("health", "Healthy")
    return None if health == "Healthy" else health
