"""The load-balancer guard as plugins use it: before taking an instance out of its groups,
reserve each removal (`ctx.reserve_removal`) against the group's healthy members read now;
release when the instance is back. The limits (`[guard]`: by default never the last
healthy member) and the reservations live in the state store, so they hold across every
worker sharing it.

Healthy, per member: weight above 0 and, where the API reports health, healthy — CLB
`DescribeHealthStatus` (`ServerHealthStatus` not `abnormal`; `unavailable` means no health
check, so no verdict); for ALB/NLB the entry's `Status` in `ListServerGroupServers`
(`Available`; an entry being added or removed is not serving) and no listener's health
check reporting it not normal (`health.py`: `GetListenerHealthStatus`; no check, no verdict).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from . import server_groups
from .entry import Membership
from .health import ListenerHealth
from .membership import by_group

HEALTH_READS = {"clb": ("DescribeVServerGroupAttribute", "DescribeHealthStatus"),
                **dict.fromkeys(("alb", "nlb"), ("ListServerGroupServers", "ListServerGroups", "ListListeners",
                                                 "GetListenerHealthStatus"))}


def group_key(kind: str, group: str) -> str:
    return f"{kind}:{group}"


def held_back_why(instance_id: str, group: str) -> str:
    return f"taking {instance_id} out of {group} would leave too few healthy members ([guard])"


def healthy_members(cloud: Any, kind: str, group: str, health: ListenerHealth | None = None) -> list[str]:
    """The server ids of the group's members that are healthy now (see the module doc);
    `health` keeps which listeners serve an ALB/NLB group between calls."""
    if kind == "clb":
        attr = cloud.slb("DescribeVServerGroupAttribute", VServerGroupId=group)
        servers = (attr.get("BackendServers") or {}).get("BackendServer") or []
        verdicts = cloud.slb("DescribeHealthStatus", LoadBalancerId=attr.get("LoadBalancerId", ""))
        sick = {s.get("ServerId") for s in (verdicts.get("BackendServers") or {}).get("BackendServer") or []
                if s.get("ServerHealthStatus") == "abnormal"}
        return sorted({s["ServerId"] for s in servers if int(s.get("Weight") or 0) > 0 and s["ServerId"] not in sick})
    def call(action: str, **params: Any) -> dict:
        return cloud.call(kind, action, params)

    rows = server_groups.list_all(call, "ListServerGroupServers", "Servers", ServerGroupId=group)
    serving = {s["ServerId"] for s in rows if int(s.get("Weight") or 0) > 0 and s.get("Status") == "Available"}
    return sorted(serving - (health or ListenerHealth(ttl=0)).not_healthy(kind, call, group)) if serving else []


def reserve(ctx: Any, instance_id: str, members: Iterable[Membership],
            health: ListenerHealth | None = None) -> str | None:
    """Reserve taking `instance_id` out of every group of `members`, all or none; returns the
    first group that would not allow it (nothing is then held), or None."""
    granted: list[str] = []
    for kind, group in by_group(members):
        key = group_key(kind, group)
        if not ctx.reserve_removal(key, instance_id, healthy_members(ctx.cloud, kind, group, health)):
            for done in granted:
                ctx.release_removal(done, instance_id)
            return key
        granted.append(key)
    return None


def confirm(ctx: Any, instance_id: str, members: Iterable[Membership], health: ListenerHealth | None = None,
            drained: bool = False) -> str | None:
    """Judge again, at the moment of removal, what `reserve` granted earlier: the groups may
    have lost healthy members since (a reclaimed spot instance counted by `count_forced`, a
    failing health check). Each reservation is given up and asked for anew against the
    healthy members read now — `drained`: the instance, at weight 0 by our own drain, counts
    as the healthy member it was. Returns the first group that no longer allows it (then
    nothing is held), or None (all held again)."""
    members = list(members)
    for kind, group in by_group(members):
        key = group_key(kind, group)
        healthy = healthy_members(ctx.cloud, kind, group, health)
        if drained:
            healthy = sorted({*healthy, instance_id})
        ctx.release_removal(key, instance_id)
        if not ctx.reserve_removal(key, instance_id, healthy):
            release(ctx, instance_id, members)
            return key
    return None


def release(ctx: Any, instance_id: str, members: Iterable[Membership]) -> None:
    for kind, group in by_group(members):
        ctx.release_removal(group_key(kind, group), instance_id)


def count_forced(ctx: Any, members_of: Mapping[str, Iterable[Membership]]) -> None:
    """Removals that are never held back (reclaimed spot instances, `instance id -> its
    memberships`) still count against their groups until they lapse (`[guard]
    hold_seconds`): all of them in one store step, before any of them leaves."""
    removals = [(group_key(kind, group), iid) for iid, members in members_of.items()
                for kind, group in by_group(members)]
    if removals:
        ctx.force_removals(removals)
