"""ALB and NLB server groups: which hold an instance, and changing them to completion.

Both APIs (ALB 2020-06-16, NLB 2022-04-30) share their shape: `ListServerGroups` and
`ListServerGroupServers` page with `NextToken`; `AddServersToServerGroup`,
`RemoveServersFromServerGroup` and `UpdateServerGroupServersAttribute` take
`Servers.N.{ServerId,ServerType,Port,Weight}` (at most 200 per call) and are
asynchronous: they answer a `JobId` and change the group in the background. A change is
done only when its job says `Succeeded`, so `change()` follows the job (ALB
`ListAsynJobs`, NLB `GetJobStatus`), bounded by `job_timeout`. While a job runs the group
refuses other changes with `IncorrectStatus.ServerGroup` (ALB) / `IncorrectStatus.serverGroup`
(NLB), which the caller retries (terraform-provider-alicloud retries both).

Docs: help.aliyun.com ALB "RemoveServersFromServerGroup" / "ListAsynJobs", NLB
"RemoveServersFromServerGroup" / "GetJobStatus" / "ListServerGroupServers".
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from ecs_worker import CloudError

from .actions import REMOVE
from .cache import MembershipCache
from .entry import Membership

KINDS = ("alb", "nlb")
PAGE_SIZE = 100             # MaxResults' maximum
MAX_PAGES = 100
JOB_TIMEOUT = 60.0          # seconds a change may take before we call it failed
JOB_POLL = (0.2, 2.0)       # first and longest pause between job reads
# A server not (or no longer) in the group: the docs do not say what a removal of one
# answers; the emulator takes the stricter reading and refuses, so `remove` re-reads and
# sends only the servers still there.
ABSENT_CODES = frozenset({"ResourceNotFound.BackendServer", "ResourceNotFound.Server"})
BUSY_CODES = frozenset({"IncorrectStatus.ServerGroup", "IncorrectStatus.serverGroup", "Conflict.Lock",
                        "SystemBusy", "IdempotenceProcessing", "OperationFailed.ResourceIsConfiguring"})
_WIRE_TYPES = {"ecs": "Ecs", "eni": "Eni", "eci": "Eci", "ip": "Ip"}

Call = Callable[..., dict]  # Cloud.alb / Cloud.nlb: call(action, **params) -> JSON


def server_group_wire(m: Membership, weight: int | None = None, with_weight: bool = True) -> dict[str, Any]:
    """The `Servers.N` element the ALB/NLB APIs take."""
    out: dict[str, Any] = {"ServerId": m.server_id, "ServerType": _WIRE_TYPES.get(m.type, "Ecs"),
                           "Port": m.port}
    if with_weight:
        out["Weight"] = m.weight if weight is None else weight
    return out


def member_from_wire(kind: str, group: str, s: dict) -> Membership:
    return Membership(kind, group, s["ServerId"], int(s["Port"]), int(s.get("Weight", 100)),
                  str(s.get("ServerType") or "Ecs").lower())


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, CloudError) and exc.code in BUSY_CODES


def change(kind: str, call: Call, action: str, group: str, servers: list[dict], *,
           job_timeout: float = JOB_TIMEOUT, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> str:
    """Make one asynchronous change and follow its job to the end; raise `CloudError` if
    the job fails or outlasts `job_timeout`. A group busy with another job is waited for
    within the same bound."""
    deadline = clock() + job_timeout
    pause = JOB_POLL[0]
    while True:
        try:
            doc = call(action, ServerGroupId=group, Servers=servers)
            break
        except CloudError as exc:
            if not is_busy(exc) or clock() + pause > deadline:
                raise
        sleep(pause)
        pause = min(JOB_POLL[1], pause * 2)
    job = doc.get("JobId")
    if not job:
        return "done"
    pause = JOB_POLL[0]
    while True:
        status, error = job_status(kind, call, job)
        if status == "succeeded":
            return f"job {job} succeeded"
        if status == "failed":
            raise CloudError(action, error or "Job.Failed", f"job {job} on {group} failed")
        if clock() + pause > deadline:
            raise CloudError(action, "Job.Timeout", f"job {job} on {group} not done after {job_timeout:g}s")
        sleep(pause)
        pause = min(JOB_POLL[1], pause * 2)


def remove(kind: str, call: Call, group: str, servers: list[dict], *, job_timeout: float = JOB_TIMEOUT) -> str:
    """`RemoveServersFromServerGroup`, followed to the end; if some servers are gone
    already, once more with those still in the group (or nothing to do)."""
    try:
        return change(kind, call, REMOVE, group, servers, job_timeout=job_timeout)
    except CloudError as exc:
        if exc.code not in ABSENT_CODES:
            raise
    present = {(s["ServerId"], int(s["Port"])) for s in list_all(call, "ListServerGroupServers", "Servers",
                                                                  ServerGroupId=group)
               if s.get("Status") != "Removing"}
    left = [s for s in servers if (s["ServerId"], int(s["Port"])) in present]
    if not left:
        return "already removed"
    return change(kind, call, REMOVE, group, left, job_timeout=job_timeout)


def list_all(call: Call, action: str, key: str, **params: Any) -> list[dict]:
    """Every item of a `NextToken`-paged list (bounded)."""
    out: list[dict] = []
    token = None
    for _ in range(MAX_PAGES):
        doc = call(action, MaxResults=PAGE_SIZE, **params, **({"NextToken": token} if token else {}))
        out += [x for x in (doc.get(key) or []) if isinstance(x, dict)]
        token = doc.get("NextToken")
        if not token:
            break
    return out


def job_status(kind: str, call: Call, job: str) -> tuple[str, str | None]:
    """("succeeded" | "failed" | "processing", error code)."""
    if kind == "alb":
        jobs = call("ListAsynJobs", JobIds=[job]).get("Jobs") or []
        found = next((j for j in jobs if j.get("Id") == job), None)
        if found is None:
            return "processing", None
        return str(found.get("Status", "")).lower(), found.get("ErrorCode")
    doc = call("GetJobStatus", JobId=job)  # NLB: Succeeded / processing
    return str(doc.get("Status", "")).lower(), None


class ServerGroupIndex(MembershipCache):
    """Finds the ALB or NLB server-group entries of instances; thread-safe; `ttl` caching.

    `groups` lists the groups to look in; empty means every server group of the region
    (`ListServerGroups`). A group's members are read whole (paged) and filtered here.
    """

    def __init__(self, kind: str, call: Call, groups: Iterable[str] = (), ttl: float = 10.0,
                 workers: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        super().__init__(ttl, workers, f"{kind}-read", clock)
        self.kind = kind
        self._call = call
        self.configured = tuple(groups)
        self._groups: tuple[float, list[str]] | None = None

    def locate(self, instance_ids: Iterable[str]) -> dict[str, list[Membership]]:
        wanted = set(instance_ids)
        found: dict[str, list[Membership]] = {i: [] for i in wanted}
        for members in self._pool.map(self.members, self.configured or self.groups()):
            for m in members:
                if m.server_id in wanted:
                    found[m.server_id].append(m)
        return found

    def groups(self) -> list[str]:
        with self._lock:
            if self._groups is not None and self._clock() - self._groups[0] < self.ttl:
                return list(self._groups[1])
        ids = [g["ServerGroupId"] for g in self._pages("ListServerGroups", "ServerGroups")]
        with self._lock:
            self._groups = (self._clock(), ids)
        return list(ids)

    def members(self, group: str) -> list[Membership]:
        with self._lock:
            hit = self._members.get(group)
            if hit is not None and self._clock() - hit[0] < self.ttl:
                return list(hit[1])
        members = [member_from_wire(self.kind, group, s)
                   for s in self._pages("ListServerGroupServers", "Servers", ServerGroupId=group)
                   if s.get("Status") not in ("Removing",)]
        with self._lock:
            self._members[group] = (self._clock(), members)
        return list(members)

    def _pages(self, action: str, key: str, **params: Any) -> list[dict]:
        return list_all(self._call, action, key, **params)
