"""Is the instance a spot notice names a spot instance? Asked of ECS, not the notice: a
forged or stray `PreemptibleInstanceInterruption` must not take an on-demand instance out.

`DescribeInstances` answers `SpotStrategy` (NoSpot for pay-as-you-go on-demand,
SpotWithPriceLimit or SpotAsPriceGo for spot) and `OperationLocks.LockReason`; a wave's
instances are read 100 to a call (the most `InstanceIds` takes), so a wave is not slowed.
A `Recycling` lock is logged when present, but Alibaba does not document that it is set
when the notice arrives, so its absence does not stop the removal.
"""
from __future__ import annotations

from typing import Any, Iterable

MAX_IDS_PER_CALL = 100  # DescribeInstances InstanceIds: at most 100
NOT_SPOT = ("", "NoSpot")


def read_spot(cloud: Any, ids: Iterable[str]) -> tuple[dict[str, str], set[str]]:
    """({instance: why it is not to be removed}, the instances with a Recycling lock)."""
    wanted = sorted(set(ids))
    refused: dict[str, str] = {}
    recycling: set[str] = set()
    for start in range(0, len(wanted), MAX_IDS_PER_CALL):
        chunk = wanted[start:start + MAX_IDS_PER_CALL]
        doc = cloud.ecs("DescribeInstances", InstanceIds=chunk, PageSize=MAX_IDS_PER_CALL)
        found = {i.get("InstanceId"): i for i in (doc.get("Instances") or {}).get("Instance") or []}
        for iid in chunk:
            instance = found.get(iid)
            if instance is None:
                refused[iid] = "ECS knows no such instance"
                continue
            strategy = instance.get("SpotStrategy") or ""
            if strategy in NOT_SPOT:
                refused[iid] = f"it is not a spot instance (SpotStrategy {strategy or 'absent'})"
            locks = (instance.get("OperationLocks") or {}).get("LockReason") or []
            if any(lock.get("LockReason") == "Recycling" for lock in locks):
                recycling.add(iid)
    return refused, recycling


def spot_only(cloud: Any, jobs: list, dry_run: bool) -> list:
    """The jobs (`.instance_id`, `.ctx`) whose instance ECS says is a spot instance; the others
    are settled without acting (logged), or all fail to come back when ECS cannot be read."""
    try:
        refused, recycling = read_spot(cloud, {j.instance_id for j in jobs})
    except Exception as exc:
        if not dry_run:
            for job in jobs:
                job.fail(exc)
            return []
        return jobs  # dry-run on a laptop without credentials: the plan, marked unverified later
    kept = []
    for job in jobs:
        why = refused.get(job.instance_id)
        if why:
            job.ctx.log.warning("not removing %s from its load balancers: %s", job.instance_id, why)
            job.ctx.skip(f"not removing {job.instance_id} from its load balancers: {why}")
            job.finish(nothing=True)
            continue
        if job.instance_id in recycling:
            job.ctx.log.info("%s carries the Recycling lock: it is being reclaimed", job.instance_id)
        kept.append(job)
    return kept
