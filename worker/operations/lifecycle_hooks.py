"""The lifecycle hooks of the scaling groups `[plugins.scaling] scaling_groups` names: what `setup`
creates or corrects, and what `doctor` checks — for each group, one SCALE_IN and one SCALE_OUT
hook whose notification target is the worker's queue
(`acs:ess:{region}:{account-id}:queue/{queue}`, CreateLifecycleHook 2014-08-28; the account id
comes from the MNS endpoint) and whose
HeartbeatTimeout is `hook_heartbeat_timeout`. A hook of the group already notifying the queue
is kept (whatever its name); only its timeout is corrected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

TRANSITIONS = ("SCALE_IN", "SCALE_OUT")


@dataclass
class HookChange:
    what: str  # "lifecycle hook asg-web SCALE_IN"
    action: str  # CreateLifecycleHook | ModifyLifecycleHook
    params: dict
    do: Callable[[], Any]


def wanted(plugins: Any) -> Any | None:
    """The scaling plugin's validated config when it is loaded and names scaling groups."""
    cfg = getattr(plugins, "configs", {}).get("scaling")
    return cfg if cfg is not None and cfg.scaling_groups else None


def queue_arn(region: str, account: str | None, queue: str) -> str:
    return f"acs:ess:{region}:{account or '<account-id>'}:queue/{queue}"


def _hooks(cloud: Any, group: str) -> list[dict]:
    rows = (cloud.ess("DescribeLifecycleHooks", ScalingGroupId=group, PageSize=50).get("LifecycleHooks") or {})
    rows = rows.get("LifecycleHook") if isinstance(rows, dict) else rows
    return rows if isinstance(rows, list) else []


def _ours(hooks: list[dict], transition: str, arn: str) -> dict | None:
    """The group's hook for `transition` that notifies our queue: same region and queue name (the
    account is always the caller's own, and may be unknown here: a non-standard MNS endpoint)."""
    region, queue = _where(arn)
    return next((h for h in hooks if h.get("LifecycleTransition") == transition
                 and _where(str(h.get("NotificationArn") or "")) == (region, queue)), None)


def _where(arn: str) -> tuple[str, str] | None:
    parts = arn.split(":", 4)  # acs:ess:{region}:{account-id}:queue/{name}
    if len(parts) == 5 and parts[:2] == ["acs", "ess"] and parts[4].startswith("queue/"):
        return parts[2], parts[4][len("queue/"):]
    return None


def changes(cloud: Any, cfg: Any, arn: str) -> tuple[list[HookChange], list[str]]:
    """The calls that make every configured group's hooks right, and the lines for hooks already right."""
    todo, fine = [], []
    for group in cfg.scaling_groups:
        hooks = _hooks(cloud, group)
        for transition in TRANSITIONS:
            what = f"lifecycle hook {group} {transition}"
            hook = _ours(hooks, transition, arn)
            if hook is None:
                params = {"ScalingGroupId": group, "LifecycleHookName": f"ecs-worker-{transition.lower().replace('_', '-')}",
                          "LifecycleTransition": transition, "HeartbeatTimeout": cfg.hook_heartbeat_timeout,
                          "DefaultResult": "CONTINUE", "NotificationArn": arn}
                todo.append(HookChange(what, "CreateLifecycleHook", params,
                                       lambda p=params: cloud.ess("CreateLifecycleHook", **p)))
            elif int(hook.get("HeartbeatTimeout") or 0) != cfg.hook_heartbeat_timeout:
                params = {"LifecycleHookId": hook["LifecycleHookId"], "HeartbeatTimeout": cfg.hook_heartbeat_timeout}
                todo.append(HookChange(what, "ModifyLifecycleHook", params,
                                       lambda p=params: cloud.ess("ModifyLifecycleHook", **p)))
            else:
                fine.append(f"✓ {what}: {hook.get('LifecycleHookName')} notifies the queue, "
                            f"timeout {cfg.hook_heartbeat_timeout}s")
    return todo, fine


def check(cloud: Any, cfg: Any, arn: str) -> list[tuple[bool, str, str]]:
    """(ok, line, fix) per group and transition, for `doctor`."""
    out = []
    for group in cfg.scaling_groups:
        hooks = _hooks(cloud, group)
        for transition in TRANSITIONS:
            hook = _ours(hooks, transition, arn)
            if hook is None:
                others = [h.get("NotificationArn") or "none" for h in hooks if h.get("LifecycleTransition") == transition]
                out.append((False, f"lifecycle hook {group} {transition}: none notifies {arn}"
                                   + (f" (targets: {', '.join(others)})" if others else ""),
                            "run `ecs-worker setup` to create it"))
                continue
            timeout = int(hook.get("HeartbeatTimeout") or 0)
            ok = timeout == cfg.hook_heartbeat_timeout
            out.append((ok, f"lifecycle hook {group} {transition}: {hook.get('LifecycleHookName')} notifies the queue, "
                            f"timeout {timeout}s" + ("" if ok else f", not {cfg.hook_heartbeat_timeout}s"),
                        "" if ok else "run `ecs-worker setup` to set [plugins.scaling] hook_heartbeat_timeout"))
    return out


def doctor_checks(doctor: Any) -> list:
    """`doctor`'s lines: one per group and transition, or why none could be read."""
    from ..cloud import CloudError
    from .doctor_lines import FAIL, PASS, Check
    from .ram_policy import mns_location

    cfg = wanted(doctor.plugins)
    if cfg is None:
        return [Check(PASS, "lifecycle hooks: none configured ([plugins.scaling] scaling_groups is empty)")]
    skipped = doctor.blocked("lifecycle hooks")
    if skipped:
        return [skipped]
    config = doctor.config
    arn = queue_arn(config.cloud.region, mns_location(config.mns.endpoint)[0], config.mns.queue)
    try:
        found = check(doctor.cloud, cfg, arn)
    except CloudError as exc:
        return [doctor.failed("ESS DescribeLifecycleHooks", exc.code, exc.message,
                              action="ess:DescribeLifecycleHooks")]
    return [Check(PASS if ok else FAIL, line, fix) for ok, line, fix in found]
