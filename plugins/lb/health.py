"""ALB and NLB health checks: which members of a server group its listeners' health checks
report not normal, for the load-balancer guard (`guard.py`).

The check's verdict is per listener (ALB 2020-06-16 and NLB 2022-04-30
`GetListenerHealthStatus(ListenerId)`: `ListenerHealthStatus[].ServerGroupInfos[]`, ALB also
`RuleHealthStatus[]` with `IncludeRule`), each group listing only its `NonNormalServers`
(`Status`: `Initial` — checked, no result yet —, `Unhealthy`, `Unused` — weight 0, or outside
the zones served —, `Unavailable` — no check). A server listed with any status but
`Unavailable` is not healthy; `Unavailable`, or a group whose check is off, gives no verdict.
From a group to its listeners: `ListServerGroups` (`RelatedLoadBalancerIds`), then
`ListListeners(LoadBalancerIds)` — for NLB only those whose `ServerGroupId` is the group;
an ALB group may be reached through forwarding rules too, so every listener is read.

Which listeners serve a group changes rarely and costs two reads: it is kept for `ttl`
seconds (a maintenance wave on one group reads it once). The verdicts are read every time:
they are the fact the guard judges by.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .server_groups import MAX_PAGES, Call, list_all

LISTENER_TTL = 60.0
MAX_LB_IDS = 20          # ListListeners' LoadBalancerIds per call
NO_VERDICT = "Unavailable"


class ListenerHealth:
    """Thread-safe; one per plugin registration (the listener cache is shared by its events)."""

    def __init__(self, ttl: float = LISTENER_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._listeners: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def not_healthy(self, kind: str, call: Call, group: str) -> set[str]:
        """The server ids of `group` that a health check of one of its listeners reports not normal."""
        out: set[str] = set()
        for listener in self.listeners(kind, call, group):
            out |= _reported(kind, call, group, listener)
        return out

    def listeners(self, kind: str, call: Call, group: str) -> list[str]:
        with self._lock:
            hit = self._listeners.get((kind, group))
            if hit is not None and self._clock() - hit[0] < self.ttl:
                return hit[1]
        rows = list_all(call, "ListServerGroups", "ServerGroups", ServerGroupIds=[group])
        lbs = sorted({lb for g in rows if g.get("ServerGroupId") == group
                      for lb in g.get("RelatedLoadBalancerIds") or []})
        found: list[str] = []
        for i in range(0, len(lbs), MAX_LB_IDS):
            found += [x["ListenerId"]
                      for x in list_all(call, "ListListeners", "Listeners", LoadBalancerIds=lbs[i:i + MAX_LB_IDS])
                      if x.get("ListenerId") and (kind == "alb" or x.get("ServerGroupId") == group)]
        with self._lock:
            self._listeners[(kind, group)] = (self._clock(), found)
        return found


def _reported(kind: str, call: Call, group: str, listener: str) -> set[str]:
    """One listener's verdicts on `group` (paged; ALB's page size is at most 30, so the default)."""
    params: dict[str, Any] = {"ListenerId": listener, **({"IncludeRule": True} if kind == "alb" else {})}
    out: set[str] = set()
    token = None
    for _ in range(MAX_PAGES):
        doc = call("GetListenerHealthStatus", **params, **({"NextToken": token} if token else {}))
        for status in (doc.get("ListenerHealthStatus") or []) + (doc.get("RuleHealthStatus") or []):
            for info in status.get("ServerGroupInfos") or []:
                if info.get("ServerGroupId") == group and _checked(info):
                    out |= {s["ServerId"] for s in info.get("NonNormalServers") or []
                            if s.get("ServerId") and s.get("Status") != NO_VERDICT}
        token = doc.get("NextToken")
        if not token:
            return out
    return out


def _checked(info: dict) -> bool:
    """Is the group's health check on? ALB `HealthCheckEnabled` "on"; NLB `HeathCheckEnabled`
    (Alibaba's spelling) true. Absent: take the servers' own statuses."""
    flag = info.get("HealthCheckEnabled", info.get("HeathCheckEnabled"))
    return flag is None or flag is True or str(flag).lower() in ("on", "true")
