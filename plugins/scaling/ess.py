"""The scaling plugin's ESS calls: read a lifecycle action back, record a heartbeat, complete it.

Reads go through `ctx.cloud.ess`; the two changes through `ctx.act` (dry-run honoured, recorded).
`RecordLifecycleActionHeartbeat` spells its parameters in lower camel case (`lifecycleHookId`,
`lifecycleActionToken`, `heartbeatTimeout`: aliyun-python-sdk-ess, 2014-08-28), the others in
upper camel case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecs_worker import CloudError

PENDING = "Pending"
TOKEN_ENDED = "LifecycleHookIdAndLifecycleActionToken.Invalid"  # the action is no longer in process


@dataclass(frozen=True)
class ActionState:
    """A lifecycle action as ESS reports it (DescribeLifecycleActions)."""

    status: str  # Pending | Timeout | Completed
    result: str  # what ended it ("" while Pending)
    instance_ids: tuple[str, ...]

    @property
    def pending(self) -> bool:
        return self.status == PENDING


def read_back(ctx, lc) -> ActionState | None:
    """The action of the notification `lc` (an `event.lifecycle`) as ESS knows it, or None when
    ESS knows no such action in that scaling activity (a forged or foreign notification)."""
    token = None
    while True:
        params: dict[str, Any] = {"ScalingActivityId": lc.scaling_activity_id, "MaxResults": 50}
        if token:
            params["NextToken"] = token
        page = ctx.cloud.ess("DescribeLifecycleActions", **params)
        for row in _list(page.get("LifecycleActions"), "LifecycleAction"):
            if row.get("LifecycleActionToken") == lc.token and row.get("LifecycleHookId") == lc.hook_id:
                return ActionState(str(row.get("LifecycleActionStatus") or ""), str(row.get("LifecycleActionResult") or ""),
                                   tuple(str(i) for i in _list(row.get("InstanceIds"), "InstanceId")))
        token = page.get("NextToken")
        if not token:
            return None


def read_or_plan(ctx, lc) -> ActionState | None:
    """`read_back`; in dry-run, when ESS cannot be read (a laptop without credentials), the
    action as the notification describes it, so the plan is still shown (marked unverified)."""
    try:
        return read_back(ctx, lc)
    except Exception as exc:  # nothing changed yet: the message comes back and we look again
        ctx.unverified(exc, "ESS")  # ... unless this is a dry run: then the plan goes on
        ctx.log.warning("dry run: could not read ESS (%s); planning from the notification, unverified",
                        getattr(exc, "code", type(exc).__name__))
        return ActionState(PENDING, "", tuple(lc.instance_ids))


def hook_timeout(ctx, hook_id: str) -> int | None:
    """The hook's HeartbeatTimeout in seconds (DescribeLifecycleHooks), or None when unknown."""
    rows = _list(ctx.cloud.ess("DescribeLifecycleHooks", **{"LifecycleHookId.1": hook_id}).get("LifecycleHooks"),
                 "LifecycleHook")
    value = rows[0].get("HeartbeatTimeout") if rows else None
    return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else None


def heartbeat(ctx, lc) -> None:
    ctx.act("RecordLifecycleActionHeartbeat", _target(lc), ctx.cloud.ess, "RecordLifecycleActionHeartbeat",
            lifecycleHookId=lc.hook_id, lifecycleActionToken=lc.token)


def complete(ctx, lc, result: str) -> None:
    ctx.act("CompleteLifecycleAction", f"{_target(lc)}={result}", ctx.cloud.ess, "CompleteLifecycleAction",
            LifecycleHookId=lc.hook_id, LifecycleActionToken=lc.token, LifecycleActionResult=result)


def ended(exc: BaseException) -> bool:
    """ESS refused because the action is no longer in process (timed out or completed)."""
    return isinstance(exc, CloudError) and exc.code == TOKEN_ENDED


def _target(lc) -> str:
    return f"{lc.scaling_group_id}/{lc.hook_name or lc.hook_id}/{','.join(lc.instance_ids)}"


def _list(value: Any, key: str) -> list:
    """RPC JSON lists come wrapped (`{"LifecycleAction": [...]}`) or bare."""
    if isinstance(value, dict):
        value = value.get(key)
    return value if isinstance(value, list) else []
