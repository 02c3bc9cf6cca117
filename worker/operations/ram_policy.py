"""The RAM policies, filled in for a config: the worker's own, and the one-time one `setup` needs.

The worker's policy is `deploy/ram-policy.json` when the project ships one (written for the
default queue names, `ecs-events` / `ecs-events-dlq`, in any region and account), with the
configured queue names, region and account put in; otherwise the built-in document below,
which names the same actions. Action names and resources: the "Authorization" table of each
MNS API page (e.g. BatchDeleteMessage, help/doc-detail/35139: `mns:BatchDeleteMessage` on
`acs:mns:$region:$accountid:/queues/$queueName/messages`), and the RAM tables of the ECS, SLB and
CloudMonitor API pages (e.g. `cms:PutEventRuleTargets`, help/en/cms/.../api-puteventruletargets).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from ..cloud.ess_apis import SETUP as ESS_SETUP, WORKER as ESS_WORKER, ram_actions

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "ram-policy.json"
DEFAULT_QUEUE, DEFAULT_DLQ = "ecs-events", "ecs-events-dlq"

# The same document as deploy/ram-policy.json (a test keeps them equal): an installed package
# has no deploy/ directory. Both queues' attributes at start-up; receive/delete/defer and
# re-send (long deferrals) on the queue; send to the dead-letter queue; ECS reads and
# StartInstance (restart); reboot and O&M event reads (maintenance); CLB, ALB and NLB reads,
# removal and restore (slb, maintenance); CLB health reads (the load-balancer guard); Auto
# Scaling lifecycle actions (scaling: cloud/ess_apis.py).
WORKER_POLICY = {
    "Version": "1",
    "Statement": [
        {"Effect": "Allow",
         "Action": ["mns:GetQueueAttributes"],
         "Resource": ["acs:mns:*:*:/queues/ecs-events", "acs:mns:*:*:/queues/ecs-events-dlq"]},
        {"Effect": "Allow",
         "Action": ["mns:BatchReceiveMessage", "mns:BatchDeleteMessage",
                    "mns:ChangeMessageVisibility", "mns:SendMessage"],
         "Resource": ["acs:mns:*:*:/queues/ecs-events/messages"]},
        {"Effect": "Allow",
         "Action": ["mns:SendMessage"],
         "Resource": ["acs:mns:*:*:/queues/ecs-events-dlq/messages"]},
        {"Effect": "Allow",
         "Action": ["ecs:DescribeInstances", "ecs:StartInstance", "ecs:RebootInstance",
                    "ecs:DescribeInstanceHistoryEvents"],
         "Resource": ["*"]},
        {"Effect": "Allow",
         "Action": ["slb:DescribeLoadBalancers", "slb:DescribeVServerGroups",
                    "slb:DescribeVServerGroupAttribute", "slb:RemoveVServerGroupBackendServers",
                    "slb:SetVServerGroupAttribute", "slb:AddVServerGroupBackendServers",
                    "slb:DescribeHealthStatus"],
         "Resource": ["*"]},
        {"Effect": "Allow",
         "Action": ["alb:ListServerGroups", "alb:ListServerGroupServers",
                    "alb:RemoveServersFromServerGroup", "alb:AddServersToServerGroup",
                    "alb:UpdateServerGroupServersAttribute", "alb:ListAsynJobs",
                    "nlb:ListServerGroups", "nlb:ListServerGroupServers",
                    "nlb:RemoveServersFromServerGroup", "nlb:AddServersToServerGroup",
                    "nlb:UpdateServerGroupServersAttribute", "nlb:GetJobStatus"],
         "Resource": ["*"]},
        {"Effect": "Allow",
         "Action": ram_actions(ESS_WORKER),
         "Resource": ["*"]},
    ],
}

# `setup` and `doctor`, run by an operator: create/adjust the queues and the event rule, and
# `doctor --probe`'s test event (SendDryRunSystemEvent) and its look at the queue (a peek:
# mns:PeekMessage in MNS's authorization table, mns:BatchPeekMessage on the API's own page).
SETUP_ACTIONS = {
    "mns": ["mns:CreateQueue", "mns:SetQueueAttributes", "mns:GetQueueAttributes"],
    "mns_messages": ["mns:PeekMessage", "mns:BatchPeekMessage"],
    "cms": ["cms:PutEventRule", "cms:PutEventRuleTargets", "cms:DescribeEventRuleList",
            "cms:DescribeEventRuleTargetList", "cms:SendDryRunSystemEvent"],
    "ess": ram_actions(ESS_SETUP),  # lifecycle hooks of the scaling groups [plugins.scaling] names
}


def _mns_arn(region: str, account: str, tail: str) -> str:
    return f"acs:mns:{region}:{account}:{tail}"


def worker_policy(queue: str, dlq: str, region: str = "*", account: str = "*",
                  shipped: Path | None = SHIPPED) -> dict:
    """The worker's policy for these queue names (an empty `dlq`: no dead-letter queue)."""
    doc = WORKER_POLICY
    if shipped is not None and shipped.is_file():
        doc = json.loads(shipped.read_text(encoding="utf-8"))
    doc = copy.deepcopy(doc)
    for statement in doc.get("Statement", []):
        resources = statement.get("Resource")
        if resources is None:
            continue
        single = isinstance(resources, str)
        out = []
        for r in [resources] if single else resources:
            r = _fill(r, queue, dlq, region, account)
            if r is not None and r not in out:
                out.append(r)
        statement["Resource"] = out[0] if single and out else out
    # A statement left with no resource (the dead-letter queue's, with none configured) goes.
    doc["Statement"] = [st for st in doc.get("Statement", []) if st.get("Resource") != []]
    return doc


def _fill(resource: str, queue: str, dlq: str, region: str, account: str) -> str | None:
    m = re.fullmatch(r"acs:mns:([^:]*):([^:]*):/queues/([^/]+)(/.*)?", resource)
    if not m:
        return resource
    name = {DEFAULT_QUEUE: queue, DEFAULT_DLQ: dlq}.get(m.group(3), m.group(3))
    if not name:
        return None
    return _mns_arn(region if m.group(1) == "*" else m.group(1), account if m.group(2) == "*" else m.group(2),
                    f"/queues/{name}{m.group(4) or ''}")


def setup_policy(queue: str, dlq: str, region: str = "*", account: str = "*") -> dict:
    """The separate, one-time policy for whoever runs `ecs-worker setup` (and `doctor`)."""
    queues = [q for q in (queue, dlq) if q]
    return {"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": SETUP_ACTIONS["mns"],
         "Resource": [_mns_arn(region, account, f"/queues/{q}") for q in queues]},
        {"Effect": "Allow", "Action": SETUP_ACTIONS["mns_messages"],
         "Resource": [_mns_arn(region, account, f"/queues/{queue}/messages")]},
        {"Effect": "Allow", "Action": SETUP_ACTIONS["cms"], "Resource": "*"},
        {"Effect": "Allow", "Action": SETUP_ACTIONS["ess"], "Resource": "*"},
    ]}


def mns_location(endpoint: str) -> tuple[str | None, str | None]:
    """(account id, region) from `https://<account>.mns.<region>[-internal[-vpc]].aliyuncs.com`."""
    m = re.match(r"https?://(\d+)\.mns\.([a-z0-9-]+?)(?:-internal(?:-vpc)?)?\.aliyuncs\.com", endpoint or "")
    return (m.group(1), m.group(2)) if m else (None, None)
