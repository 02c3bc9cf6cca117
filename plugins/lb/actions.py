"""The load-balancer vocabulary the built-ins share, once: the API actions that change a
group's members, and how many members one call may carry.

CLB (SLB 2014-05-15) vserver groups take `BackendServers` (at most 20 a call); ALB
(2020-06-16) and NLB (2022-04-30) server groups take `Servers.N` (at most 200 a call)."""
from __future__ import annotations

MAX_BACKENDS_PER_CALL = 20  # CLB's limit for BackendServers
MAX_SERVERS_PER_CALL = 200  # ALB's and NLB's limit for Servers.N

# CLB vserver groups
CLB_REMOVE = "RemoveVServerGroupBackendServers"
CLB_ADD = "AddVServerGroupBackendServers"
CLB_WEIGHT = "SetVServerGroupAttribute"  # drain: weight 0
# ALB and NLB server groups (the same names in both APIs)
ADD, REMOVE, UPDATE = "AddServersToServerGroup", "RemoveServersFromServerGroup", "UpdateServerGroupServersAttribute"

CLB_ACTIONS = {"remove": CLB_REMOVE, "add": CLB_ADD, "weight": CLB_WEIGHT}
SERVER_GROUP_ACTIONS = {"remove": REMOVE, "add": ADD, "weight": UPDATE}


def action_name(kind: str, change: str) -> str:
    """The API action of a change ("remove", "add", "weight") for a kind ("clb", "alb", "nlb")."""
    return (CLB_ACTIONS if kind == "clb" else SERVER_GROUP_ACTIONS)[change]
