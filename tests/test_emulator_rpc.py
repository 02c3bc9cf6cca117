"""ECS and SLB RPC actions of the emulator, driven through the unmodified aliyunsdkcore clients."""
from __future__ import annotations

import json
import time

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.request import CommonRequest
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.DescribeInstanceStatusRequest import DescribeInstanceStatusRequest
from aliyunsdkecs.request.v20140526.DescribeTagsRequest import DescribeTagsRequest
from aliyunsdkecs.request.v20140526.StartInstanceRequest import StartInstanceRequest
from aliyunsdkecs.request.v20140526.StartInstancesRequest import StartInstancesRequest
from aliyunsdkecs.request.v20140526.StopInstanceRequest import StopInstanceRequest
from aliyunsdkslb.request.v20140515.AddVServerGroupBackendServersRequest import AddVServerGroupBackendServersRequest
from aliyunsdkslb.request.v20140515.DescribeLoadBalancersRequest import DescribeLoadBalancersRequest
from aliyunsdkslb.request.v20140515.DescribeVServerGroupAttributeRequest import DescribeVServerGroupAttributeRequest
from aliyunsdkslb.request.v20140515.DescribeVServerGroupsRequest import DescribeVServerGroupsRequest
from aliyunsdkslb.request.v20140515.RemoveVServerGroupBackendServersRequest import (
    RemoveVServerGroupBackendServersRequest,
)
from aliyunsdkslb.request.v20140515.SetVServerGroupAttributeRequest import SetVServerGroupAttributeRequest

from ecs_worker.emulator import default_state
from ecs_worker.testing import acs_client

WEB1, WEB2, SPOT = "i-bp1web000000000001", "i-bp1web000000000002", "i-bp1spot00000000001"
GROUP = "rsp-bp1web80"


@pytest.fixture
def emulator_state():
    state = default_state()
    state["start_delay_seconds"] = 0.3
    state["stop_delay_seconds"] = 0.3
    state["instances"].append({"id": "i-locked", "status": "Stopped", "spot": True, "locks": ["Recycling"]})
    return state


@pytest.fixture
def call(emulator):
    client = acs_client(emulator, auto_retry=False)

    def do(request, **params):
        request.set_endpoint(emulator.endpoint)
        for name, value in params.items():
            getattr(request, f"set_{name}")(value)
        return json.loads(client.do_action_with_exception(request))
    return do


def server_error(call, request, **params) -> ServerException:
    with pytest.raises(ServerException) as exc:
        call(request, **params)
    return exc.value


def statuses(emulator) -> dict:
    return {i["id"]: i["status"] for i in emulator.state()["instances"]}


# ---------------------------------------------------------------------------- ECS


def test_describe_instances_shape(call):
    out = call(DescribeInstancesRequest(), InstanceIds=json.dumps([SPOT, "i-locked", "i-unknown"]))
    assert out["TotalCount"] == 2 and out["RequestId"]
    by_id = {i["InstanceId"]: i for i in out["Instances"]["Instance"]}
    assert by_id[SPOT]["SpotStrategy"] == "SpotAsPriceGo" and by_id[SPOT]["Status"] == "Running"
    assert by_id[SPOT]["Tags"]["Tag"] == [{"TagKey": "app", "TagValue": "web"}]
    assert by_id[SPOT]["OperationLocks"]["LockReason"] == []
    assert by_id["i-locked"]["OperationLocks"]["LockReason"] == [{"LockReason": "Recycling"}]
    assert by_id["i-locked"]["StoppedMode"] == "KeepCharging"
    web = call(DescribeInstancesRequest(), InstanceIds=json.dumps([WEB1]))["Instances"]["Instance"][0]
    assert web["SpotStrategy"] == "NoSpot" and web["RegionId"] == "cn-hangzhou"


def test_describe_instances_tag_filter_and_paging(call):
    tagged = call(DescribeInstancesRequest(), Tags=[{"Key": "ecs-worker:auto-restart", "Value": "true"}])
    assert [i["InstanceId"] for i in tagged["Instances"]["Instance"]] == [WEB2]
    has_key = call(DescribeInstancesRequest(), Tags=[{"Key": "app"}])
    assert has_key["TotalCount"] == 3
    page1 = call(DescribeInstancesRequest(), PageSize=3, PageNumber=1)
    page2 = call(DescribeInstancesRequest(), PageSize=3, PageNumber=2)
    assert (page1["TotalCount"], page1["PageNumber"], page1["PageSize"]) == (4, 1, 3)
    assert len(page1["Instances"]["Instance"]) == 3 and len(page2["Instances"]["Instance"]) == 1
    err = server_error(call, DescribeInstancesRequest(), InstanceIds="not json")
    assert (err.get_http_status(), err.get_error_code()) == (400, "InvalidInstanceIds.Malformed")


def test_start_instance_goes_starting_then_running(call, emulator):
    call(StartInstanceRequest(), InstanceId=WEB2)
    status = call(DescribeInstanceStatusRequest(), InstanceIds=[WEB2])["InstanceStatuses"]["InstanceStatus"]
    assert status == [{"InstanceId": WEB2, "Status": "Starting"}]
    err = server_error(call, StartInstanceRequest(), InstanceId=WEB2)
    assert (err.get_http_status(), err.get_error_code()) == (403, "IncorrectInstanceStatus")
    time.sleep(0.35)
    assert statuses(emulator)[WEB2] == "Running"
    assert emulator.state()["calls"]["ecs:StartInstance"] == 2


def test_start_instance_errors(call):
    err = server_error(call, StartInstanceRequest(), InstanceId=WEB1)
    assert (err.get_http_status(), err.get_error_code()) == (403, "IncorrectInstanceStatus")
    err = server_error(call, StartInstanceRequest(), InstanceId="i-nope")
    assert (err.get_http_status(), err.get_error_code()) == (404, "InvalidInstanceId.NotFound")
    err = server_error(call, StartInstanceRequest(), InstanceId="i-locked")
    assert (err.get_http_status(), err.get_error_code()) == (403, "IncorrectInstanceStatus")


@pytest.mark.parametrize("lock,code", [("security", "InstanceLockedForSecurity"),
                                       ("financial", "InstanceExpiredOrInArrears")])
def test_a_locked_instance_answers_its_documented_lock_error(call, emulator, lock, code):
    emulator.world.cloud.instances["i-locked"]["locks"] = [lock]
    err = server_error(call, StartInstanceRequest(), InstanceId="i-locked")
    assert (err.get_http_status(), err.get_error_code()) == (403, code)


def test_start_instances_success_first_reports_each(call, emulator):
    out = call(StartInstancesRequest(), InstanceIds=[WEB2, WEB1], BatchOptimization="SuccessFirst")
    codes = {r["InstanceId"]: r["Code"] for r in out["InstanceResponses"]["InstanceResponse"]}
    assert codes == {WEB2: "200", WEB1: "IncorrectInstanceStatus"}
    assert statuses(emulator)[WEB2] == "Starting"


def test_start_instances_all_together_is_all_or_nothing(call, emulator):
    err = server_error(call, StartInstancesRequest(), InstanceIds=[WEB2, WEB1])
    assert err.get_error_code() == "IncorrectInstanceStatus"
    assert statuses(emulator)[WEB2] == "Stopped"


def test_stop_instance_and_stopped_mode(call, emulator):
    call(StopInstanceRequest(), InstanceId=WEB1, StoppedMode="StopCharging")
    assert statuses(emulator)[WEB1] == "Stopping"
    time.sleep(0.35)
    inst = call(DescribeInstancesRequest(), InstanceIds=json.dumps([WEB1]))["Instances"]["Instance"][0]
    assert (inst["Status"], inst["StoppedMode"]) == ("Stopped", "StopCharging")


def test_describe_tags(call):
    out = call(DescribeTagsRequest(), ResourceType="instance")
    pairs = {(t["TagKey"], t["TagValue"]): t["ResourceTypeCount"]["Instance"] for t in out["Tags"]["Tag"]}
    assert pairs == {("app", "web"): 3, ("ecs-worker:auto-restart", "true"): 1}
    one = call(DescribeTagsRequest(), ResourceId=WEB2, Tags=[{"Key": "app"}])
    assert [(t["TagKey"], t["TagValue"]) for t in one["Tags"]["Tag"]] == [("app", "web")]


def test_unknown_action_is_invalid_action_not_found(emulator):
    client = acs_client(emulator, auto_retry=False)
    for product, version in (("Ecs", "2014-05-26"), ("Slb", "2014-05-15")):
        req = CommonRequest(domain=emulator.endpoint, version=version, action_name="NoSuchAction", product=product)
        req.set_method("POST")
        with pytest.raises(ServerException) as exc:
            client.do_action_with_exception(req)
        assert (exc.value.get_http_status(), exc.value.get_error_code()) == (404, "InvalidAction.NotFound")


# ---------------------------------------------------------------------------- SLB


def test_describe_load_balancers_filters(call):
    assert call(DescribeLoadBalancersRequest(), ServerId=SPOT)["TotalCount"] == 1
    assert call(DescribeLoadBalancersRequest(), ServerId=WEB2)["TotalCount"] == 0
    lbs = call(DescribeLoadBalancersRequest(), LoadBalancerId="lb-bp1example000001")
    assert lbs["LoadBalancers"]["LoadBalancer"][0]["LoadBalancerId"] == "lb-bp1example000001"
    assert call(DescribeLoadBalancersRequest(), LoadBalancerId="lb-other")["TotalCount"] == 0


def test_vserver_groups_discovery(call):
    groups = call(DescribeVServerGroupsRequest(), LoadBalancerId="lb-bp1example000001")
    assert [g["VServerGroupId"] for g in groups["VServerGroups"]["VServerGroup"]] == [GROUP]
    attr = call(DescribeVServerGroupAttributeRequest(), VServerGroupId=GROUP)
    assert attr["BackendServers"]["BackendServer"][0] == {
        "ServerId": WEB1, "Port": 80, "Weight": 100, "Type": "ecs", "Description": ""}
    err = server_error(call, DescribeVServerGroupsRequest(), LoadBalancerId="lb-nope")
    assert err.get_error_code() == "InvalidLoadBalancerId.NotFound"


def test_remove_backend_servers_ignores_missing_and_limits_to_20(call, emulator):
    servers = [{"ServerId": SPOT, "Port": "80", "Weight": "100", "Type": "ecs"},
               {"ServerId": "i-not-there", "Port": "80"}]
    out = call(RemoveVServerGroupBackendServersRequest(), VServerGroupId=GROUP, BackendServers=json.dumps(servers))
    assert [s["ServerId"] for s in out["BackendServers"]["BackendServer"]] == [WEB1]
    again = call(RemoveVServerGroupBackendServersRequest(), VServerGroupId=GROUP, BackendServers=json.dumps(servers))
    assert len(again["BackendServers"]["BackendServer"]) == 1  # idempotent
    too_many = json.dumps([{"ServerId": f"i-{n}", "Port": "80"} for n in range(21)])
    err = server_error(call, RemoveVServerGroupBackendServersRequest(), VServerGroupId=GROUP, BackendServers=too_many)
    assert (err.get_http_status(), err.get_error_code()) == (400, "TooManyBackendServers")
    groups = emulator.state()["load_balancers"][0]["vserver_groups"]
    assert [s["server_id"] for s in groups[0]["backend_servers"]] == [WEB1]
    assert emulator.state()["calls"]["slb:RemoveVServerGroupBackendServers"] == 3


def test_add_and_set_weights(call):
    call(AddVServerGroupBackendServersRequest(), VServerGroupId=GROUP,
         BackendServers=json.dumps([{"ServerId": WEB2, "Port": "8080", "Weight": "50"}]))
    out = call(SetVServerGroupAttributeRequest(), VServerGroupId=GROUP,
               BackendServers=json.dumps([{"ServerId": WEB1, "Port": "80", "Weight": "0"}]))
    weights = {(s["ServerId"], s["Port"]): s["Weight"] for s in out["BackendServers"]["BackendServer"]}
    assert weights == {(WEB1, 80): 0, (SPOT, 80): 100, (WEB2, 8080): 50}
    err = server_error(call, SetVServerGroupAttributeRequest(), VServerGroupId="rsp-nope",
                       BackendServers=json.dumps([{"ServerId": WEB1, "Weight": "0"}]))
    assert err.get_error_code() == "InvalidVServerGroupId.NotFound"
