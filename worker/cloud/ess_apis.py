"""The Auto Scaling (ESS) APIs ecs-worker calls, and why: the one list the RAM policies, `setup`
and `doctor` read (until the project's API registry takes it in). SDK `aliyun-python-sdk-ess`,
API version 2014-08-28 (`aliyunsdkess.request.v20140828`); RAM actions are `ess:<API>`
(each API page's authorization table). `RecordLifecycleActionHeartbeat` alone spells its
parameters in lower camel case (`lifecycleHookId`, `lifecycleActionToken`, `heartbeatTimeout`).
"""
from __future__ import annotations

SDK, VERSION = "aliyun-python-sdk-ess", "2014-08-28"

# The worker (the `scaling` plugin), with what each call is for.
WORKER = {
    "DescribeLifecycleActions": "read the lifecycle action back before acting (a forged notification removes nothing)",
    "DescribeLifecycleHooks": "the hook's HeartbeatTimeout, to heartbeat in time",
    "RecordLifecycleActionHeartbeat": "keep the hook open while plugins still work",
    "CompleteLifecycleAction": "let ESS go on once every plugin taking the hook is done",
}
# `setup` (create or check the hooks) and `doctor` (check them), run by an administrator.
SETUP = {
    "DescribeLifecycleHooks": "find the hooks of each configured scaling group",
    "CreateLifecycleHook": "a SCALE_IN and a SCALE_OUT hook notifying the worker's queue",
    "ModifyLifecycleHook": "point a hook at the queue, or set its HeartbeatTimeout",
}


def ram_actions(apis: dict[str, str]) -> list[str]:
    return [f"ess:{name}" for name in apis]
