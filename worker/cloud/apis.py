"""Every cloud API the worker calls, once: service, action, RAM action(s), read or change, retry class.

Derived from this registry: `deploy/ram-policy.json` and the policies `setup` prints
(`ram_policy.py`; `python -m ecs_worker.operations.ram_policy --write` regenerates the file), the metrics'
known action series, `doctor`'s permission checks, the RAM action named when a call is denied,
and which calls `CloudClient` will make at all (any other raises). Tests check the emulator
served nothing else and that each RPC entry is a real API of Alibaba's own published models.

To add an API (e.g. an Auto Scaling family): one `Api(...)` line below — and for a new
service, its SDK request package in `client.py`'s `_REQUESTS` and its rate in `[cloud]`.

Sources of the RAM action names: each API's "Authorization information" table in Alibaba's
API reference (ECS 2014-05-26, SLB 2014-05-15, ALB 2020-06-16, NLB 2022-04-30, CMS 2019-01-01,
ESS 2014-08-28, MNS). Where Alibaba's pages disagree (MNS: the per-API pages say `mns:BatchReceiveMessage` /
`mns:BatchDeleteMessage`, the MNS authorization table and Alibaba's system policies say
`mns:ReceiveMessage` / `mns:DeleteMessage`), `ram` lists every reading and the policy grants
them all (docs/cloud-behaviour.md, M10).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Retry classes: which failures `CloudClient` retries for this API.
RETRY = "retry"            # idempotent: throttling and transient errors (timeouts, 5xx) are retried
REFUSED_ONLY = "refused"   # not idempotent: retried only when surely refused before acting (throttling)

# Who needs an API: the consume loop ("worker"), a built-in plugin by name, or the administrator ("setup").
WORKER, SETUP = "worker", "setup"
LB_USERS = ("slb", "maintenance")  # plugins/lb: the slb plugin takes instances out, maintenance and back in

# MNS resources (`{queue}` / `{dlq}`: the configured queue names; ram_policy fills them in).
QUEUE, QUEUES = ("/queues/{queue}",), ("/queues/{queue}", "/queues/{dlq}")
MESSAGES, DLQ_MESSAGES = ("/queues/{queue}/messages",), ("/queues/{dlq}/messages",)
ANY = ("*",)


@dataclass(frozen=True)
class Api:
    service: str                # "ecs", "slb", "alb", "nlb", "cms", "ess", "mns"
    action: str                 # the API's action name
    ram: tuple[str, ...]        # RAM action(s) it needs; several = Alibaba's pages disagree: grant all
    change: bool                # False: a read
    users: tuple[str, ...]      # WORKER, SETUP, plugin names
    retry: str = RETRY
    resources: tuple[str, ...] = ANY
    dry_run: bool = False       # takes DryRun=true: doctor proves the permission without a change
    probe: dict = field(default_factory=dict, compare=False)  # doctor's read: params that need no ids
    opt_in: str = ""            # needed only when this setting asks; not in the shipped policy
    why: str = ""
    reads: tuple[str, ...] = ()  # answer fields the worker reads (dotted, lists implicit): checked
                                 # against Alibaba's response model (tests/test_alibaba_models.py)

    @property
    def key(self) -> tuple[str, str]:
        return self.service, self.action


def _rpc(service: str, action: str, change: bool, users: tuple[str, ...], why: str, **kw) -> Api:
    return Api(service, action, (f"{service}:{action}",), change, users, why=why, **kw)


def _mns(action: str, ram: tuple[str, ...], change: bool, users: tuple[str, ...], resources, why: str) -> Api:
    return Api("mns", action, ram, change, users, resources=resources, why=why)


APIS: tuple[Api, ...] = (
    # MNS: the consume loop (queue/source.py), dead letters; `setup` (queue/admin.py)
    _mns("GetQueueAttributes", ("mns:GetQueueAttributes",), False, (WORKER, SETUP), QUEUES,
         "start-up: both queues exist, read their visibility timeout"),
    _mns("BatchReceiveMessage", ("mns:ReceiveMessage", "mns:BatchReceiveMessage"), True, (WORKER,), MESSAGES,
         "long-poll the queue"),
    _mns("BatchDeleteMessage", ("mns:DeleteMessage", "mns:BatchDeleteMessage"), True, (WORKER,), MESSAGES,
         "delete messages once their outcome is settled"),
    _mns("ChangeMessageVisibility", ("mns:ChangeMessageVisibility",), True, (WORKER,), MESSAGES,
         "defer a message (grace periods, retries with backoff)"),
    _mns("SendMessage", ("mns:SendMessage",), True, (WORKER,), MESSAGES + DLQ_MESSAGES,
         "re-send a long deferral with DelaySeconds; dead-letter a message that cannot be handled"),
    _mns("CreateQueue", ("mns:CreateQueue",), True, (SETUP,), QUEUES, "create the queues"),
    _mns("SetQueueAttributes", ("mns:SetQueueAttributes",), True, (SETUP,), QUEUES, "adjust their attributes"),
    _mns("BatchPeekMessage", ("mns:PeekMessage", "mns:BatchPeekMessage"), False, (SETUP,), MESSAGES,
         "`doctor --probe`: look for its test event without consuming anything"),
    # ECS
    _rpc("ecs", "DescribeInstances", False, ("restart", "maintenance", "slb"),
         "read an instance's tags, status, spot strategy and locks before acting", probe={"PageSize": 1},
         reads=("TotalCount", *(f"Instances.Instance.{f}" for f in (
             "InstanceId", "Status", "SpotStrategy", "Tags.Tag.TagKey", "Tags.Tag.TagValue",
             "OperationLocks.LockReason.LockReason")))),
    _rpc("ecs", "StartInstance", True, ("restart",), "start an opted-in instance that stopped unexpectedly",
         dry_run=True),
    _rpc("ecs", "RebootInstance", True, ("maintenance",), "reboot before a scheduled O&M reboot",
         retry=REFUSED_ONLY, dry_run=True),
    _rpc("ecs", "RedeployInstance", True, ("maintenance",), "redeploy before a scheduled O&M redeploy",
         retry=REFUSED_ONLY, opt_in="[plugins.maintenance] event_types with SystemMaintenance.Redeploy"),
    _rpc("ecs", "DescribeInstanceHistoryEvents", False, ("maintenance",), "is the O&M event still scheduled?",
         probe={"PageSize": 1}, reads=("TotalCount", "InstanceSystemEventSet.InstanceSystemEventType.EventId",
                                       "InstanceSystemEventSet.InstanceSystemEventType.EventCycleStatus.Name")),
    # CLB (SLB) vserver groups
    _rpc("slb", "DescribeLoadBalancers", False, LB_USERS, "find the load balancers that hold an instance",
         probe={"PageSize": 1}, reads=("TotalCount", "LoadBalancers.LoadBalancer.LoadBalancerId")),
    _rpc("slb", "DescribeVServerGroups", False, LB_USERS, "their vserver groups",
         reads=("VServerGroups.VServerGroup.VServerGroupId",)),
    _rpc("slb", "DescribeVServerGroupAttribute", False, LB_USERS, "a group's backend servers",
         reads=("LoadBalancerId",
                *(f"BackendServers.BackendServer.{f}" for f in ("ServerId", "Port", "Weight", "Type")))),
    _rpc("slb", "DescribeHealthStatus", False, LB_USERS,
         "the load-balancer guard: which of a group's members are healthy before one is taken out",
         reads=tuple(f"BackendServers.BackendServer.{f}" for f in ("ServerId", "ServerHealthStatus"))),
    _rpc("slb", "RemoveVServerGroupBackendServers", True, LB_USERS, "take an instance out"),
    _rpc("slb", "SetVServerGroupAttribute", True, LB_USERS, "drain it (weight 0), restore its weight"),
    _rpc("slb", "AddVServerGroupBackendServers", True, ("maintenance",), "put it back"),
    # ALB and NLB server groups (asynchronous changes, followed to their end)
    *(api for service, job in (("alb", "ListAsynJobs"), ("nlb", "GetJobStatus")) for api in (
        _rpc(service, "ListServerGroups", False, LB_USERS, "the server groups; a group's load balancers",
             probe={"MaxResults": 1},
             reads=("TotalCount", "NextToken", "ServerGroups.ServerGroupId", "ServerGroups.RelatedLoadBalancerIds")),
        _rpc(service, "ListServerGroupServers", False, LB_USERS, "a group's servers",
             reads=("NextToken", *(f"Servers.{f}" for f in ("ServerId", "Port", "Weight", "ServerType", "Status")))),
        _rpc(service, "RemoveServersFromServerGroup", True, LB_USERS, "take an instance out", dry_run=True,
             reads=("JobId",)),
        _rpc(service, "AddServersToServerGroup", True, ("maintenance",), "put it back", dry_run=True,
             reads=("JobId",)),
        _rpc(service, "UpdateServerGroupServersAttribute", True, LB_USERS, "drain it, restore its weight",
             dry_run=True, reads=("JobId",)),
        _rpc(service, "ListListeners", False, ("maintenance",),
             "the load-balancer guard: the listeners whose health checks judge a group's members",
             probe={"MaxResults": 1},
             reads=("NextToken", "Listeners.ListenerId", *(("Listeners.ServerGroupId",) if service == "nlb" else ()))),
        _rpc(service, "GetListenerHealthStatus", False, ("maintenance",),
             "the load-balancer guard: which of a group's members fail its health check",
             reads=("NextToken", *(f"{top}.ServerGroupInfos.{f}" for top in (
                 ("ListenerHealthStatus", "RuleHealthStatus") if service == "alb" else ("ListenerHealthStatus",))
                 for f in ("ServerGroupId", "HealthCheckEnabled" if service == "alb" else "HeathCheckEnabled",
                           "NonNormalServers.ServerId", "NonNormalServers.Status")))),
        _rpc(service, job, False, LB_USERS, "follow a change job to its end",
             probe={"MaxResults": 1} if job == "ListAsynJobs" else {},
             reads=("Jobs.Id", "Jobs.Status", "Jobs.ErrorCode") if job == "ListAsynJobs" else ("Status",)))),
    # CloudMonitor: `setup` writes the rule, `doctor` reads it
    *(_rpc("cms", action, action.startswith("Put"), (SETUP,), why, reads=("Code", "Message", *reads))
      for action, why, reads in (
        ("PutEventRule", "the system-event rule", ("Success",)),
        ("PutEventRuleTargets", "its MNS target", ("Success", "FailedParameterCount",
                                                   "FailedMnsParameters.MnsParameter.Queue",
                                                   "FailedMnsParameters.MnsParameter.Region")),
        ("DescribeEventRuleList", "read the rule", ("Success", *(f"EventRules.EventRule.{f}" for f in (
            "Name", "State", "Description", "EventPattern.EventPattern.Product",
            "EventPattern.EventPattern.NameList.NameList")))),
        ("DescribeEventRuleTargetList", "read its targets",
         tuple(f"MnsParameters.MnsParameter.{f}" for f in ("Id", "Region", "Queue", "Arn"))),
        ("SendDryRunSystemEvent", "`doctor --probe`: a marked test event through the rule", ("Success",)))),
    # Auto Scaling (ESS) 2014-08-28, SDK aliyun-python-sdk-ess: the scaling plugin's lifecycle
    # actions; `setup`/`doctor` the lifecycle hooks of the groups [plugins.scaling] names.
    # RAM: `ess:<API>` (each API page's authorization table; docs/cloud-behaviour.md, A9).
    _rpc("ess", "DescribeLifecycleActions", False, ("scaling",),
         "read the lifecycle action back before acting (a forged notification removes nothing)",
         reads=tuple(f"LifecycleActions.LifecycleAction.{f}" for f in (
             "LifecycleActionToken", "LifecycleHookId", "LifecycleActionStatus", "LifecycleActionResult"))),
    _rpc("ess", "DescribeLifecycleHooks", False, ("scaling", SETUP),
         "the hooks of each configured scaling group; a hook's HeartbeatTimeout, to heartbeat in time",
         reads=tuple(f"LifecycleHooks.LifecycleHook.{f}" for f in (
             "LifecycleHookId", "LifecycleHookName", "HeartbeatTimeout"))),
    _rpc("ess", "RecordLifecycleActionHeartbeat", True, ("scaling",), "keep the hook open while plugins still work"),
    _rpc("ess", "CompleteLifecycleAction", True, ("scaling",),
         "let ESS go on once every plugin taking the hook is done"),
    _rpc("ess", "CreateLifecycleHook", True, (SETUP,), "a SCALE_IN and a SCALE_OUT hook notifying the worker's queue"),
    _rpc("ess", "ModifyLifecycleHook", True, (SETUP,), "point a hook at the queue, or set its HeartbeatTimeout"),
)

BY_KEY: dict[tuple[str, str], Api] = {a.key: a for a in APIS}
assert len(BY_KEY) == len(APIS), "an API is listed twice"


def api(service: str, action: str) -> Api:
    """The registry's entry; an API it does not list is a programming error (KeyError names it)."""
    try:
        return BY_KEY[(service, action)]
    except KeyError:
        raise KeyError(f"{service} {action} is not in the API registry (worker/cloud/apis.py)") from None


def ram_text(service: str, action: str) -> str:
    """The RAM action(s) a call needs, as an operator reads them: `mns:ReceiveMessage and mns:Batch…`."""
    return " and ".join(api(service, action).ram)


def worker_mns_apis() -> tuple[str, ...]:
    """The MNS APIs the worker itself calls (what MNS bills it for: metrics' `api` labels)."""
    return tuple(a.action for a in APIS if a.service == "mns" and WORKER in a.users)


def mns_ram(action: str) -> str:
    """`ram_text` for an MNS API: what the MNS queue clients are handed to name refusals with
    (the queue code itself knows no registry)."""
    return ram_text("mns", action)


def used_by(names: set[str] | frozenset[str], *, shipped_only: bool = True) -> list[Api]:
    """The APIs the named users need (WORKER, SETUP, plugin names), in registry order."""
    return [a for a in APIS if set(a.users) & set(names) and not (shipped_only and a.opt_in)]


def changes_of(plugin: str) -> tuple[str, ...]:
    """The change actions a plugin records through ctx.act (metrics' zero series), once each."""
    return tuple(dict.fromkeys(a.action for a in APIS if a.change and plugin in a.users))
