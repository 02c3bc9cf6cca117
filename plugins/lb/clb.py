"""Which SLB vserver groups hold an instance, on which ports: configured or discovered.

Discovery follows the API's own path: `DescribeLoadBalancers(ServerId)` per instance →
`DescribeVServerGroups(LoadBalancerId)` → `DescribeVServerGroupAttribute(VServerGroupId)`.
For a wave (many instances at once) one paged `DescribeLoadBalancers` listing beats one
lookup per instance, so a large batch lists instead. Group lists and memberships are
cached briefly (the listing too: a wave's late batch reuses it); memberships are updated in
place after a removal, so a duplicate event finds nothing left to do without another read.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from .cache import MembershipCache
from .entry import Membership

PAGE_SIZE = 100          # DescribeLoadBalancers' maximum
LIST_ALL_THRESHOLD = 10  # instances in one batch above which listing every LB is cheaper
MAX_PAGES = 100          # 10 000 load balancers: a bound, not a limit anyone should meet
ALL = "*"                # the listing's key among the cached group lists (no load balancer's id)


def clb_wire(m: Membership, weight: int | None = None) -> dict[str, str]:
    """The `BackendServers` JSON element the SLB API takes."""
    return {"ServerId": m.server_id, "Port": str(m.port),
            "Weight": str(m.weight if weight is None else weight), "Type": m.type}


class BackendIndex(MembershipCache):
    """Finds the backends of instances; thread-safe; `ttl` seconds of caching."""

    def __init__(self, slb: Callable[..., dict], groups: Iterable[str] = (), ttl: float = 10.0,
                 workers: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl, workers, "slb-read", clock)
        self._slb = slb  # CloudClient.slb
        self.configured = tuple(groups)
        self._lb_groups: dict[str, tuple[float, list[str]]] = {}

    def locate(self, instance_ids: Iterable[str]) -> dict[str, list[Membership]]:
        """Every backend entry of each instance (an empty list: in no group)."""
        wanted = set(instance_ids)
        groups = self.configured or self._discover_groups(wanted)
        found: dict[str, list[Membership]] = {i: [] for i in wanted}
        for members in self._pool.map(self.members, groups):
            for b in members:
                if b.server_id in wanted:
                    found[b.server_id].append(b)
        return found

    def members(self, group: str) -> list[Membership]:
        hit = self._fresh(self._members, group)
        if hit is not None:
            return hit
        doc = self._slb("DescribeVServerGroupAttribute", VServerGroupId=group)
        members = [Membership("clb", group, s["ServerId"], int(s["Port"]), int(s.get("Weight", 100)),
                           s.get("Type") or "ecs")
                   for s in _items(doc, "BackendServers", "BackendServer")]
        self._store(self._members, group, members)
        return list(members)

    # -- discovery ----------------------------------------------------------------
    def _discover_groups(self, instance_ids: set[str]) -> list[str]:
        if len(instance_ids) > LIST_ALL_THRESHOLD or self._fresh(self._lb_groups, ALL) is not None:
            lbs = self._all_load_balancers()  # (a listing still fresh costs no call at all)
        else:
            lbs = sorted({lb for found in self._pool.map(self._load_balancers_of, instance_ids)
                          for lb in found})
        return [g for groups in self._pool.map(self._groups_of, lbs) for g in groups]

    def _load_balancers_of(self, instance_id: str) -> list[str]:
        doc = self._slb("DescribeLoadBalancers", ServerId=instance_id, PageSize=PAGE_SIZE)
        return [lb["LoadBalancerId"] for lb in _items(doc, "LoadBalancers", "LoadBalancer")]

    def _all_load_balancers(self) -> list[str]:
        hit = self._fresh(self._lb_groups, ALL)
        if hit is not None:
            return hit
        ids: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            doc = self._slb("DescribeLoadBalancers", PageNumber=page, PageSize=PAGE_SIZE)
            batch = [lb["LoadBalancerId"] for lb in _items(doc, "LoadBalancers", "LoadBalancer")]
            ids += batch
            if len(batch) < PAGE_SIZE or len(ids) >= int(doc.get("TotalCount", 0) or 0):
                break
        self._store(self._lb_groups, ALL, ids)
        return ids

    def _groups_of(self, lb: str) -> list[str]:
        hit = self._fresh(self._lb_groups, lb)
        if hit is not None:
            return hit
        doc = self._slb("DescribeVServerGroups", LoadBalancerId=lb)
        groups = [g["VServerGroupId"] for g in _items(doc, "VServerGroups", "VServerGroup")]
        self._store(self._lb_groups, lb, groups)
        return list(groups)

    # -- cache --------------------------------------------------------------------
    def _fresh(self, cache: dict, key: str) -> Any:
        with self._lock:
            entry = cache.get(key)
            if entry is not None and self._clock() - entry[0] < self.ttl:
                return list(entry[1])
        return None

    def _store(self, cache: dict, key: str, value: list) -> None:
        with self._lock:
            cache[key] = (self._clock(), list(value))


def _items(doc: dict, outer: str, inner: str) -> list[dict]:
    """The SDK's JSON nests lists as {"Outer": {"Inner": [...]}}; tolerate it missing."""
    value = (doc.get(outer) or {})
    return list(value.get(inner) or []) if isinstance(value, dict) else []
