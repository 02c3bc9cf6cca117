"""An instance's load-balancer memberships across CLB, ALB and NLB, and changing them per group.

What a plugin that takes an instance out for a while needs (`LoadBalancers(ctx.cloud)`): read
every membership fresh (group, port, weight, type), take them out (or drain them to weight
0), and put them back exactly as recorded. Memberships turn to and from small JSON dicts,
so they can travel in a deferred message's state. Changes are grouped per group and kind:
CLB `RemoveVServerGroupBackendServers` / `AddVServerGroupBackendServers` /
`SetVServerGroupAttribute` (20 servers a call), ALB/NLB `RemoveServersFromServerGroup` /
`AddServersToServerGroup` / `UpdateServerGroupServersAttribute` (200 a call, each job
followed to its end). Every method here is a plain call; the plugin wraps it in `ctx.act`.
"""
from __future__ import annotations

from typing import Any, Iterable

from . import server_groups
from .actions import CLB_ACTIONS, MAX_BACKENDS_PER_CALL, MAX_SERVERS_PER_CALL, SERVER_GROUP_ACTIONS
from .clb import BackendIndex, clb_wire
from .entry import KINDS, Membership
from .server_groups import server_group_wire

_CLB, _SERVER_GROUP = CLB_ACTIONS, SERVER_GROUP_ACTIONS


def by_group(memberships: Iterable[Membership]) -> dict[tuple[str, str], list[Membership]]:
    out: dict[tuple[str, str], list[Membership]] = {}
    for m in memberships:
        out.setdefault((m.kind, m.group), []).append(m)
    return out


class LoadBalancers:
    """`cloud` is a `Cloud`; `kinds` limits which load balancers are read and changed."""

    def __init__(self, cloud: Any, kinds: Iterable[str] = KINDS, job_timeout: float = server_groups.JOB_TIMEOUT):
        self.cloud = cloud
        self.kinds = tuple(k for k in KINDS if k in set(kinds))
        self.job_timeout = job_timeout

    def memberships(self, instance_id: str) -> list[Membership]:
        """Every entry of the instance in every group of the chosen kinds, read now."""
        found: list[Membership] = []
        if "clb" in self.kinds:
            index = BackendIndex(self.cloud.slb, ttl=0)
            try:
                found += index.locate([instance_id])[instance_id]
            finally:
                index.close()
        for kind in ("alb", "nlb"):
            if kind in self.kinds:
                sg = server_groups.ServerGroupIndex(kind, self._api(kind), ttl=0)
                try:
                    found += sg.locate([instance_id])[instance_id]
                finally:
                    sg.close()
        return found

    def remove(self, kind: str, group: str, members: list[Membership]) -> str:
        if kind == "clb":
            for chunk in _chunks(members, MAX_BACKENDS_PER_CALL):
                self.cloud.slb(_CLB["remove"], VServerGroupId=group, BackendServers=[clb_wire(m) for m in chunk])
            return "removed"
        done = ""
        for chunk in _chunks([server_group_wire(m, with_weight=False) for m in members], MAX_SERVERS_PER_CALL):
            done = server_groups.remove(kind, self._api(kind), group, chunk, job_timeout=self.job_timeout)
        return done

    def drain(self, kind: str, group: str, members: list[Membership]) -> str:
        """Weight 0: no new connections, existing ones finish."""
        if kind == "clb":
            for chunk in _chunks(members, MAX_BACKENDS_PER_CALL):
                self.cloud.slb(_CLB["weight"], VServerGroupId=group, BackendServers=[clb_wire(m, 0) for m in chunk])
            return "weight 0"
        return self._jobs(kind, "weight", group, [server_group_wire(m, weight=0) for m in members])

    def restore(self, kind: str, group: str, members: list[Membership]) -> str:
        """Put the entries back as recorded: add the missing ones, then set the weight of
        any present with another weight (a drain, or someone's edit meanwhile)."""
        present = {(m.server_id, m.port): m.weight for m in self._current(kind, group)}
        missing = [m for m in members if (m.server_id, m.port) not in present]
        reweigh = [m for m in members
                   if (m.server_id, m.port) in present and present[(m.server_id, m.port)] != m.weight]
        if kind == "clb":
            for chunk in _chunks(missing, MAX_BACKENDS_PER_CALL):
                self.cloud.slb(_CLB["add"], VServerGroupId=group, BackendServers=[clb_wire(m) for m in chunk])
            for chunk in _chunks(reweigh, MAX_BACKENDS_PER_CALL):
                self.cloud.slb(_CLB["weight"], VServerGroupId=group, BackendServers=[clb_wire(m) for m in chunk])
        else:
            if missing:
                self._jobs(kind, "add", group, [server_group_wire(m) for m in missing])
            if reweigh:
                self._jobs(kind, "weight", group, [server_group_wire(m) for m in reweigh])
        return f"{len(missing)} added, {len(reweigh)} reweighed" if missing or reweigh else "already in place"

    # -- internals ----------------------------------------------------------------
    def _current(self, kind: str, group: str) -> list:
        if kind == "clb":
            index = BackendIndex(self.cloud.slb, (group,), ttl=0)
            try:
                return index.members(group)
            finally:
                index.close()
        sg = server_groups.ServerGroupIndex(kind, self._api(kind), (group,), ttl=0)
        try:
            return sg.members(group)
        finally:
            sg.close()

    def _jobs(self, kind: str, change: str, group: str, servers: list[dict]) -> str:
        done = ""
        for chunk in _chunks(servers, MAX_SERVERS_PER_CALL):
            done = server_groups.change(kind, self._api(kind), _SERVER_GROUP[change], group, chunk,
                                        job_timeout=self.job_timeout)
        return done

    def _api(self, kind: str):
        return lambda action, **params: self.cloud.call(kind, action, params)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
