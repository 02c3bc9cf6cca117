"""Auto Scaling (ESS) scaling activities and their lifecycle actions (ess.py serves the API).

A scale-in or scale-out starts an activity; each lifecycle hook of the group for that transition
opens one lifecycle action (one token) over the activity's instances, sends its notification to
the hook's MNS queue, and waits `HeartbeatTimeout` seconds (times `ess_time_scale`), or until
CompleteLifecycleAction, extended by RecordLifecycleActionHeartbeat. A wait that times out ends
with the hook's DefaultResult (status Timeout). On a scale-in, a wait that ends with ABANDON or
ROLLBACK ends the other waits early; otherwise the result of the last wait to end decides
(CreateLifecycleHook, 2014-08-28). Then: scale-in CONTINUE/ABANDON removes and releases the
instances, ROLLBACK keeps them; scale-out CONTINUE puts them in service (into the attached
load-balancer groups), ABANDON/ROLLBACK releases them.

ESS's pages disagree on when a scale-in takes instances out of the attached load-balancer groups
(`ess_detach`: "before" the wait, or "after" it); both are modelled. Each ended action records
`members_at_end`: every load-balancer group (attached or not) still holding one of its instances
at that moment — what tests read to prove the worker took them out first. Lock held throughout.
"""
from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from datetime import datetime, timezone

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}-emu{next(_ids):06d}"


class Activities:
    """Activities and lifecycle actions of one emulator's ESS."""

    def __init__(self, ess) -> None:
        self.ess = ess  # ess.AutoScaling: groups, hooks, load balancers, ECS, delivery
        self.activities: dict[str, dict] = {}
        self.actions: dict[str, dict] = {}  # token -> lifecycle action

    # -- starting ---------------------------------------------------------------------
    def start(self, group: dict, transition: str, instance_ids: list[str]) -> dict:
        now = time.time()
        act = {"id": new_id("asa"), "group_id": group["id"], "transition": transition,
               "instances": list(instance_ids), "status": "InProgress", "start": now, "end": None,
               "result": None, "actions": []}
        self.activities[act["id"]] = act
        if transition == "SCALE_IN" and self.ess.detach == "before":
            self.ess.detach_from_attached(group, act["instances"])
        for hook in [h for h in group["hooks"] if h["transition"] == transition]:
            token = str(uuid.uuid4()).upper()
            action = {"token": token, "hook_id": hook["id"], "activity_id": act["id"], "status": "Pending",
                      "result": None, "deadline": now + hook["heartbeat_timeout"] * self.ess.time_scale,
                      "heartbeats": 0, "members_at_end": None, "ended": None}
            self.actions[token] = action
            act["actions"].append(token)
            self._notify(group, hook, act, action)
        if not act["actions"]:
            self._finish(act, "CONTINUE")
        return act

    def _notify(self, group: dict, hook: dict, act: dict, action: dict) -> None:
        arn = hook.get("notification_arn") or ""
        queue = arn.rsplit(":queue/", 1)[1] if ":queue/" in arn else None
        if queue is None:
            return
        ess = self.ess
        content = {"scalingGroupId": group["id"], "scalingGroupName": group["name"],
                   "scalingActivityId": act["id"], "lifecycleHookId": hook["id"],
                   "lifecycleHookName": hook["name"], "lifecycleActionToken": action["token"],
                   "lifecycleTransition": act["transition"], "defaultResult": hook["default_result"],
                   "instanceIds": list(act["instances"])}
        if hook.get("notification_metadata"):
            content["notificationMetadata"] = hook["notification_metadata"]
        doc = {"product": "ESS", "regionId": ess.region, "userId": ess.account_id,
               "resourceArn": f"acs:ess:{ess.region}:{ess.account_id}:scalinggroup/{group['id']}",
               "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "content": content}
        body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode("ascii")
        ess.deliver(queue, body)

    # -- waits ending -------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for action in list(self.actions.values()):
            if action["status"] == "Pending" and action["deadline"] <= now:
                hook = self.ess.hook(action["hook_id"])
                self.end(action, hook["default_result"] if hook else "CONTINUE", "Timeout")

    def end(self, action: dict, result: str, status: str) -> None:
        action["status"], action["result"], action["ended"] = status, result, time.time()
        act = self.activities[action["activity_id"]]
        action["members_at_end"] = {i: self.ess.memberships(i) for i in act["instances"]}
        pending = [self.actions[t] for t in act["actions"] if self.actions[t]["status"] == "Pending"]
        if act["transition"] == "SCALE_IN" and result in ("ABANDON", "ROLLBACK"):
            for other in pending:  # ends the other waits early
                other["status"], other["result"], other["ended"] = "Completed", result, time.time()
                other["members_at_end"] = {i: self.ess.memberships(i) for i in act["instances"]}
            pending = []
        if not pending:
            self._finish(act, result)

    def _finish(self, act: dict, result: str) -> None:
        ess, group = self.ess, self.ess.groups.get(act["group_id"])
        act["status"], act["result"], act["end"] = "Successful", result, time.time()
        # a scale-in keeps its instances only on ROLLBACK; a scale-out keeps them only on CONTINUE
        keep = result == ("ROLLBACK" if act["transition"] == "SCALE_IN" else "CONTINUE")
        for iid in act["instances"]:
            if keep:
                ess.in_service(group, iid)
            else:
                ess.release(group, iid)
        if act["transition"] == "SCALE_IN" and result == "ROLLBACK":
            act["status"] = "Rejected"

    def pending_for(self, instance_id: str) -> dict | None:
        for action in self.actions.values():
            if action["status"] == "Pending" and instance_id in self.activities[action["activity_id"]]["instances"]:
                return action
        return None

    def snapshot(self) -> list[dict]:
        return [dict(a, instances=list(self.activities[a["activity_id"]]["instances"]))
                for a in self.actions.values()]

