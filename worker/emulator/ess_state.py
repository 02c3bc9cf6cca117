"""The state-file part of Auto Scaling (ESS): scaling groups, their instances, the load-balancer
groups attached to them, and their lifecycle hooks (validated like the rest of state.py).

    scaling_groups   list of
        id*                 str            unique, e.g. "asg-web"
        name                str            default: the id
        instances           list of str    instance ids (each in `instances`), InService
        vserver_groups      list of {"id", "port", "weight"}   attached CLB vserver groups
        alb_server_groups   list of {"id", "port", "weight"}   attached ALB server groups
        nlb_server_groups   list of {"id", "port", "weight"}   attached NLB server groups
        lifecycle_hooks     list of
            name*               str
            id                  str        default "ash-<name>"
            transition*         SCALE_IN | SCALE_OUT
            heartbeat_timeout   int 30..21600, default 600
            default_result      CONTINUE | ABANDON | ROLLBACK, default CONTINUE
            notification_arn    str        acs:ess:{region}:{account}:queue/{name}
            notification_metadata str
    ess_detach           "before" | "after"   when a scale-in takes its instances out of the attached
                                              groups: before the lifecycle wait (the 2014 and Chinese
                                              pages) or after it (the 2022 English page); default "after"
    ess_time_scale       number > 0           lifecycle waits last this share of their seconds (tests:
                                              0.01 makes the minimum 30 s wait 0.3 s); default 1
"""
from __future__ import annotations

from typing import Any

TRANSITIONS = ("SCALE_IN", "SCALE_OUT")
RESULTS = ("CONTINUE", "ABANDON", "ROLLBACK")
HEARTBEAT_MIN, HEARTBEAT_MAX, HEARTBEAT_DEFAULT = 30, 21600, 600  # CreateLifecycleHook HeartbeatTimeout
DETACH_READINGS = ("before", "after")
LB_KEYS = ("vserver_groups", "alb_server_groups", "nlb_server_groups")


def validate_scaling(v: Any, raw: dict, instance_ids: set) -> dict:
    """`scaling_groups`, `ess_detach` and `ess_time_scale` of a state document, normalized."""
    groups = v.items(raw.get("scaling_groups", []), "scaling_groups", lambda g, p: _group(v, g, p, instance_ids))
    v.unique(groups, "scaling_groups", "id")
    return {"scaling_groups": groups,
            "ess_detach": v.choice(raw.get("ess_detach", "after"), "ess_detach", DETACH_READINGS),
            "ess_time_scale": v.number(raw.get("ess_time_scale", 1.0), "ess_time_scale", 0.0001)}


def _group(v: Any, g: Any, p: str, instance_ids: set) -> dict:
    v.obj(g, p, ("id",), ("name", "instances", "lifecycle_hooks") + LB_KEYS)
    out = {"id": v.string(g["id"], p + ".id"), "name": v.string(g.get("name", g["id"]), p + ".name"),
           "instances": v.items(g.get("instances", []), p + ".instances", lambda s, sp: v.string(s, sp)),
           "lifecycle_hooks": v.items(g.get("lifecycle_hooks", []), p + ".lifecycle_hooks",
                                      lambda h, hp: _hook(v, h, hp))}
    for n, iid in enumerate(out["instances"]):
        if iid not in instance_ids:
            v.fail(f"{p}.instances[{n}]", f"no instance {iid!r} in `instances`")
    for key in LB_KEYS:
        out[key] = v.items(g.get(key, []), f"{p}.{key}", lambda a, ap: _attached(v, a, ap))
    return out


def _attached(v: Any, a: Any, p: str) -> dict:
    v.obj(a, p, ("id", "port"), ("weight",))
    return {"id": v.string(a["id"], p + ".id"), "port": v.integer(a["port"], p + ".port", 0, 65535),
            "weight": v.integer(a.get("weight", 100), p + ".weight", 0, 100)}


def _hook(v: Any, h: Any, p: str) -> dict:
    v.obj(h, p, ("name", "transition"), ("id", "heartbeat_timeout", "default_result", "notification_arn",
                                        "notification_metadata"))
    name = v.string(h["name"], p + ".name")
    return {"id": v.string(h.get("id", f"ash-{name}"), p + ".id"), "name": name,
            "transition": v.choice(h["transition"], p + ".transition", TRANSITIONS),
            "heartbeat_timeout": v.integer(h.get("heartbeat_timeout", HEARTBEAT_DEFAULT), p + ".heartbeat_timeout",
                                           HEARTBEAT_MIN, HEARTBEAT_MAX),
            "default_result": v.choice(h.get("default_result", "CONTINUE"), p + ".default_result", RESULTS),
            "notification_arn": _optional(v, h, "notification_arn", p),
            "notification_metadata": _optional(v, h, "notification_metadata", p)}


def _optional(v: Any, h: dict, key: str, p: str) -> str | None:
    return v.string(h[key], f"{p}.{key}") if h.get(key) is not None else None
