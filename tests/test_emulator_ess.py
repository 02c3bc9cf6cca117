"""The emulator's Auto Scaling through the unmodified `aliyun-python-sdk-ess` request classes:
the documented parameter spelling and error codes, waits that time out with the default result,
several hooks on one scale-in, ROLLBACK and ABANDON."""
from __future__ import annotations

import json
import time

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.request import CommonRequest
from aliyunsdkess.request.v20140828 import (CompleteLifecycleActionRequest, DescribeLifecycleActionsRequest,
                                            DescribeLifecycleHooksRequest, DescribeScalingInstancesRequest,
                                            RecordLifecycleActionHeartbeatRequest)

from ecs_worker.testing import acs_client, run_emulator
from scaling_kit import ARN, actions, body_json, fleet, memberships, notifications


def call(emu, request):
    request.set_endpoint(emu.endpoint)
    request.set_protocol_type("http")
    return json.loads(acs_client(emu, auto_retry=False).do_action_with_exception(request))


def complete(emu, hook_id, token, result="CONTINUE"):
    r = CompleteLifecycleActionRequest.CompleteLifecycleActionRequest()
    r.set_LifecycleHookId(hook_id)
    r.set_LifecycleActionToken(token)
    r.set_LifecycleActionResult(result)
    return call(emu, r)


def test_heartbeat_takes_lower_camel_case_and_an_ended_action_is_refused_with_the_documented_code():
    with run_emulator(fleet(groups=1, per_group=2, time_scale=0.01, timeout=30)) as emu:
        activity = emu.scale_in("asg-0", ["i-asg0n00"])
        token = body_json(notifications(emu)[0])["content"]["lifecycleActionToken"]
        beat = RecordLifecycleActionHeartbeatRequest.RecordLifecycleActionHeartbeatRequest()
        beat.set_lifecycleHookId("ash-in0")
        beat.set_lifecycleActionToken(token)
        for _ in range(4):  # four heartbeats 0.2 s apart hold a 0.3 s wait open for 0.8 s
            call(emu, beat)
            time.sleep(0.2)
        assert actions(emu)[0]["status"] == "Pending" and actions(emu)[0]["heartbeats"] == 4
        upper = CommonRequest(domain=emu.endpoint, version="2014-08-28", action_name="RecordLifecycleActionHeartbeat")
        upper.add_query_param("LifecycleHookId", "ash-in0")  # the spelling of every other ESS call: refused
        upper.add_query_param("LifecycleActionToken", token)
        with pytest.raises(ServerException) as wrong:
            call(emu, upper)
        assert wrong.value.get_error_code() == "MissingParameter"
        rows = DescribeScalingInstancesRequest.DescribeScalingInstancesRequest()
        rows.set_ScalingGroupId("asg-0")
        states = {r["InstanceId"]: r["LifecycleState"] for r in call(emu, rows)["ScalingInstances"]["ScalingInstance"]}
        assert states == {"i-asg0n00": "Removing:Wait", "i-asg0n01": "InService"}
        time.sleep(0.5)  # no heartbeat: the wait times out with the default result
        read = DescribeLifecycleActionsRequest.DescribeLifecycleActionsRequest()
        read.set_ScalingActivityId(activity)
        (row,) = call(emu, read)["LifecycleActions"]["LifecycleAction"]
        assert (row["LifecycleActionStatus"], row["LifecycleActionResult"]) == ("Timeout", "CONTINUE")
        assert row["InstanceIds"]["InstanceId"] == ["i-asg0n00"]
        with pytest.raises(ServerException) as refused:
            complete(emu, "ash-in0", token)
        assert refused.value.get_error_code() == "LifecycleHookIdAndLifecycleActionToken.Invalid"
        assert "i-asg0n00" not in emu.state()["ess"]["scaling_groups"][0]["instances"]  # ESS went on


def test_hooks_are_described_with_their_target_and_an_unknown_id_is_the_documented_error():
    with run_emulator(fleet(groups=1, per_group=1)) as emu:
        r = DescribeLifecycleHooksRequest.DescribeLifecycleHooksRequest()
        r.set_ScalingGroupId("asg-0")
        hooks = call(emu, r)["LifecycleHooks"]["LifecycleHook"]
        assert {(h["LifecycleTransition"], h["NotificationArn"], h["HeartbeatTimeout"]) for h in hooks} == {
            ("SCALE_IN", ARN, 600), ("SCALE_OUT", ARN, 600)}
        with pytest.raises(ServerException) as missing:
            complete(emu, "ash-nope", "T")
        assert missing.value.get_error_code() == "LifecycleHookIdAndLifecycleActionToken.Invalid"


def second_hook(state, default_result):
    state["scaling_groups"][0]["lifecycle_hooks"].append(
        {"name": "other-team", "id": "ash-other", "transition": "SCALE_IN", "default_result": default_result})
    return state


def test_on_a_scale_in_one_hook_ending_with_rollback_ends_the_others_and_keeps_the_instance():
    with run_emulator(second_hook(fleet(groups=1, per_group=1), "CONTINUE")) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        mine = [a for a in actions(emu) if a["hook_id"] == "ash-in0"][0]
        complete(emu, "ash-in0", mine["token"], "ROLLBACK")
        assert {(a["status"], a["result"]) for a in actions(emu)} == {("Completed", "ROLLBACK")}
        assert emu.state()["ess"]["scaling_groups"][0]["instances"] == ["i-asg0n00"]
        assert sorted(m.split(":")[0] for m in memberships(emu, "i-asg0n00")) == ["alb", "clb", "clb", "nlb"]


def test_otherwise_the_last_wait_to_end_decides():
    with run_emulator(second_hook(fleet(groups=1, per_group=1), "CONTINUE")) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        by_hook = {a["hook_id"]: a["token"] for a in actions(emu)}
        complete(emu, "ash-in0", by_hook["ash-in0"], "CONTINUE")
        assert "i-asg0n00" in emu.state()["ess"]["scaling_groups"][0]["instances"]  # the other still waits
        complete(emu, "ash-other", by_hook["ash-other"], "CONTINUE")
        assert emu.state()["ess"]["scaling_groups"][0]["instances"] == []
        # released, and out of the groups attached to the scaling group — but ESS never touches a
        # group it was not told about: the stale entry the `scaling` plugin exists to prevent
        assert memberships(emu, "i-asg0n00") == ["clb:rsp-other0:8080"]


def test_a_scale_out_abandoned_releases_the_new_instances():
    with run_emulator(fleet(groups=1, per_group=1)) as emu:
        started = emu.scale_out("asg-0", 2)
        (action,) = [a for a in actions(emu) if a["hook_id"] == "ash-out0"]
        complete(emu, "ash-out0", action["token"], "ABANDON")
        ids = {i["id"] for i in emu.state()["instances"]}
        assert not ids & set(started["instances"])


def test_reads_take_the_sdks_repeat_lists():
    from aliyunsdkess.request.v20140828 import DescribeScalingActivitiesRequest, DescribeScalingGroupsRequest

    with run_emulator(fleet(groups=2, per_group=2)) as emu:
        activity = emu.scale_in("asg-1", ["i-asg1n00"])
        groups = DescribeScalingGroupsRequest.DescribeScalingGroupsRequest()
        groups.set_ScalingGroupIds(["asg-1"])
        assert [g["ScalingGroupId"] for g in call(emu, groups)["ScalingGroups"]["ScalingGroup"]] == ["asg-1"]
        acts = DescribeScalingActivitiesRequest.DescribeScalingActivitiesRequest()
        acts.set_ScalingActivityIds([activity])
        (row,) = call(emu, acts)["ScalingActivities"]["ScalingActivity"]
        assert (row["ScalingActivityId"], row["StatusCode"]) == (activity, "InProgress")
        rows = DescribeScalingInstancesRequest.DescribeScalingInstancesRequest()
        rows.set_ScalingGroupId("asg-1")
        rows.set_InstanceIds(["i-asg1n01"])
        assert [r["InstanceId"] for r in call(emu, rows)["ScalingInstances"]["ScalingInstance"]] == ["i-asg1n01"]
