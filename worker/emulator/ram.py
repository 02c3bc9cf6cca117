"""RAM policy enforcement: the state key `ram_policy`, a RAM policy document.

    {"Version": "1", "Statement": [{"Effect": "Allow" | "Deny",
                                    "Action": "mns:BatchReceiveMessage" | [...],
                                    "Resource": "acs:mns:*:*:/queues/ecs-events/messages" | [...]}]}

When present, every signed call is checked: an explicit Deny wins, else some Allow must match,
else the call is refused — MNS with 403 `AccessDenied`, ECS/SLB with 403 `Forbidden.RAM`, as the
real services answer (RAM "Policy elements" / "Policy evaluation logic"). `*` in Action or
Resource matches any run of characters; actions compare case-insensitively. `Condition`,
`NotAction` and `NotResource` are refused at load time rather than silently ignored.

The resource of a call (the ARNs in each API's "Authorization" table):
    MNS queue operations          acs:mns:<region>:<account>:/queues/<queue>
    MNS message operations        acs:mns:<region>:<account>:/queues/<queue>/messages
    ECS                           acs:ecs:<region>:<account>:instance/<InstanceId or *>
    SLB                           acs:slb:<region>:<account>:loadbalancer/<LoadBalancerId or *>
    any other RPC product         acs:<product>:<region>:<account>:*
"""
from __future__ import annotations

from typing import Any, Callable

MNS_DENIED = (403, "AccessDenied", "The OwnerId that your Access Key Id associated to is forbidden for this operation.")
RPC_DENIED = (403, "Forbidden.RAM", "User not authorized to operate on the specified resource, or this API "
                                    "doesn't support RAM.")
# ALB and NLB list a RAM denial in their error tables as 403 Forbidden.NoPermission.
RPC_DENIED_BY_PRODUCT = {p: (403, "Forbidden.NoPermission", "You are not authorized to perform this operation.")
                         for p in ("alb", "nlb")}

# The RAM action an MNS batch call needs. Alibaba's pages disagree: each API's own page says
# `mns:BatchReceiveMessage` / `mns:BatchDeleteMessage` ("api"); MNS's authorization table, and
# Alibaba's system policies, map BatchReceiveMessage to `mns:ReceiveMessage` and deletes to
# `mns:DeleteMessage` ("table"). The state key `mns_ram_reading` picks one, so a policy can be
# proven to work under both. (The emulator's own reading, not the worker's registry.)
MNS_READINGS = {
    "api": {},
    "table": {"BatchReceiveMessage": "ReceiveMessage", "BatchDeleteMessage": "DeleteMessage",
              "BatchSendMessage": "SendMessage", "BatchPeekMessage": "PeekMessage"},
}


def rpc_denied(product: str) -> tuple[int, str, str]:
    return RPC_DENIED_BY_PRODUCT.get(product, RPC_DENIED)


class _Glob:
    """`*` matches any run of characters. Two-pointer matching: O(len(text) * len(pattern))
    at worst, never the exponential backtracking a regex of many `.*` can fall into."""

    def __init__(self, pattern: str, ignore_case: bool) -> None:
        self.ignore_case = ignore_case
        self.pattern = pattern.lower() if ignore_case else pattern

    def match(self, text: str) -> bool:
        p, t = self.pattern, text.lower() if self.ignore_case else text
        i = j = 0
        star, mark = -1, 0
        while i < len(t):
            if j < len(p) and p[j] != "*" and p[j] == t[i]:
                i, j = i + 1, j + 1
            elif j < len(p) and p[j] == "*":
                star, mark, j = j, i, j + 1
            elif star >= 0:
                mark += 1
                i, j = mark, star + 1
            else:
                return False
        return all(c == "*" for c in p[j:])


class Policy:
    """A validated policy document, compiled for `allows(action, resource)`."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self._rules = [(st["Effect"], [_Glob(a, True) for a in st["Action"]],
                        [_Glob(r, False) for r in st["Resource"]]) for st in doc["Statement"]]

    def allows(self, action: str, resource: str) -> bool:
        allowed = False
        for effect, actions, resources in self._rules:
            if any(a.match(action) for a in actions) and any(r.match(resource) for r in resources):
                if effect == "Deny":
                    return False
                allowed = True
        return allowed


def validate_policy(raw: Any, fail: Callable[[str, str], None], path: str = "ram_policy") -> dict:
    """Check a policy document; `fail(path, message)` raises. Returns it with lists normalised."""
    if not isinstance(raw, dict):
        fail(path, "must be an object (a RAM policy document)")
    for key in raw:
        if key not in ("Version", "Statement"):
            fail(f"{path}.{key}", "unknown key (allowed: Statement, Version)")
    if raw.get("Version") != "1":
        fail(f"{path}.Version", 'must be "1"')
    statements = raw.get("Statement")
    if not isinstance(statements, list) or not statements:
        fail(f"{path}.Statement", "must be a non-empty list")
    out = []
    for i, st in enumerate(statements):
        sp = f"{path}.Statement[{i}]"
        if not isinstance(st, dict):
            fail(sp, "must be an object")
        for key in st:
            if key not in ("Effect", "Action", "Resource"):
                fail(f"{sp}.{key}", "not supported by the emulator (Effect, Action, Resource only)")
        if st.get("Effect") not in ("Allow", "Deny"):
            fail(f"{sp}.Effect", "must be Allow or Deny")
        norm = {"Effect": st["Effect"]}
        for key in ("Action", "Resource"):
            value = st.get(key)
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
                fail(f"{sp}.{key}", "must be a non-empty string or list of strings")
            norm[key] = list(values)
        out.append(norm)
    return {"Version": "1", "Statement": out}


MESSAGE_ACTIONS = frozenset({"SendMessage", "BatchSendMessage", "ReceiveMessage", "BatchReceiveMessage",
                             "PeekMessage", "BatchPeekMessage", "DeleteMessage", "BatchDeleteMessage",
                             "ChangeMessageVisibility"})


def mns_resource(region: str, account: str, action: str, queue: str | None) -> str:
    """Message operations act on `/queues/<q>/messages`, queue operations on `/queues/<q>`."""
    base = f"acs:mns:{region}:{account}:/queues/{queue or '*'}"
    return base + "/messages" if action in MESSAGE_ACTIONS else base


def rpc_resource(region: str, account: str, product: str, params: dict,
                 lb_of_group: Callable[[str], str | None]) -> str:
    if product == "ecs":
        return f"acs:ecs:{region}:{account}:instance/{params.get('InstanceId') or '*'}"
    if product == "slb":
        lb = params.get("LoadBalancerId") or (lb_of_group(params["VServerGroupId"])
                                              if params.get("VServerGroupId") else None)
        return f"acs:slb:{region}:{account}:loadbalancer/{lb or '*'}"
    return f"acs:{product}:{region}:{account}:*"  # other products: account-wide
