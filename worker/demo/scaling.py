"""The demo's Auto Scaling part (issue 23), as data and witness: a scaling group whose web
instance is in both CLB vserver groups and the ALB server group; `setup` creates the group's
lifecycle hooks (the queue as target), the group scales in, and the instance leaves every load
balancer before ESS removes it. ESS detaches the attached groups only after the wait here (the
2022 page's reading), so it is the worker that takes the instance out."""
from __future__ import annotations

SCALING_GROUP, SCALED_IN = "asg-demoweb00001", "i-demoasg00000000001"
SCALING_CONFIG = f"""
[plugins.scaling]
scaling_groups = ["{SCALING_GROUP}"]
coalesce_ms = 200
"""


def with_scaling_group(state: dict, clb_groups: tuple[str, ...], alb_group: str) -> dict:
    state["instances"].append({"id": SCALED_IN, "status": "Running", "tags": {"app": "web"}})
    for lb in state["load_balancers"]:
        for g in lb["vserver_groups"]:
            if g["id"] in clb_groups:
                g["backend_servers"].append({"server_id": SCALED_IN, "port": 80 if g["id"] == clb_groups[0] else 8080})
    for g in state.get("alb_server_groups", []):
        if g["id"] == alb_group:
            g["servers"].append({"server_id": SCALED_IN, "port": 8080})
    state["scaling_groups"] = [{"id": SCALING_GROUP, "instances": [SCALED_IN],
                                "vserver_groups": [{"id": clb_groups[0], "port": 80}],
                                "alb_server_groups": [{"id": alb_group, "port": 8080}]}]
    state["ess_detach"] = "after"
    return state


def scale_in(emulator) -> str:
    emulator.scale_in(SCALING_GROUP, [SCALED_IN])
    return f"Auto Scaling scales {SCALING_GROUP} in: {SCALED_IN} waits on its lifecycle hook"


def scaling_lines(before: dict, after: dict) -> list[str]:
    """What the emulator saw: where the instance was, whether it was out of every group when its
    lifecycle action ended, how it ended, and whether ESS went on."""
    ess = after.get("ess", {})
    acts = [a for a in ess.get("lifecycle_actions", []) if SCALED_IN in a["instances"]]
    if not acts:
        return [f"scale-in: no lifecycle action for {SCALED_IN} (hooks not created?)"]
    action = acts[-1]
    was_in = sorted(_entries(before, SCALED_IN))
    left = action["members_at_end"].get(SCALED_IN) if action["members_at_end"] else None
    gone = not any(i["id"] == SCALED_IN for i in after["instances"])
    return [f"scale-in: {SCALED_IN} was in {len(was_in)} load-balancer entr(ies) ({', '.join(was_in)}); "
            + ("out of every one when its lifecycle action ended" if left == [] else f"STILL IN {left} when it ended"),
            f"  lifecycle action {action['status']} {action['result']} (heartbeats {action['heartbeats']}); "
            + ("ESS then removed and released the instance" if gone else "the instance is still there")]


def _entries(state: dict, iid: str) -> set[str]:
    found = {f"CLB {g['id']}:{s['port']}" for lb in state["load_balancers"] for g in lb["vserver_groups"]
             for s in g["backend_servers"] if s["server_id"] == iid}
    for kind in ("alb", "nlb"):
        found |= {f"{kind.upper()} {g['id']}:{s['port']}" for g in state.get(f"{kind}_server_groups", [])
                  for s in g["servers"] if s["server_id"] == iid}
    return found
