"""The emulator closes the loop: CloudMonitor rules (through the unmodified aliyun-python-sdk-cms
request classes), CreateQueue/SetQueueAttributes (through the mns SDK), and fleet events delivered
to the queues that rules target — and nowhere else."""
from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest
from aliyunsdkcms.request.v20190101.DescribeEventRuleListRequest import DescribeEventRuleListRequest
from aliyunsdkcms.request.v20190101.DescribeEventRuleTargetListRequest import DescribeEventRuleTargetListRequest
from aliyunsdkcms.request.v20190101.PutEventRuleRequest import PutEventRuleRequest
from aliyunsdkcms.request.v20190101.PutEventRuleTargetsRequest import PutEventRuleTargetsRequest
from aliyunsdkecs.request.v20140526.StartInstanceRequest import StartInstanceRequest
from aliyunsdkecs.request.v20140526.StopInstanceRequest import StopInstanceRequest
from mns.mns_exception import MNSServerException
from mns.queue import QueueMeta

from ecs_worker.emulator import default_state
from ecs_worker.testing import acs_client, mns_queue

WEB1, WEB2, SPOT = "i-bp1web000000000001", "i-bp1web000000000002", "i-bp1spot00000000001"


@pytest.fixture
def emulator_state():
    state = default_state()
    state["queues"] = []  # an empty account: setup's starting point
    state["start_delay_seconds"] = 0.2
    state["stop_delay_seconds"] = 0.2
    return state


def _do(emulator, request) -> dict:
    request.set_endpoint(emulator.endpoint)
    request.set_protocol_type("http")
    return json.loads(acs_client(emulator, auto_retry=False).do_action_with_exception(request))


def _rule(emulator, name="ecs-worker", names=("Instance:StateChange",), queue="ecs-events"):
    r = PutEventRuleRequest()
    r.set_RuleName(name)
    r.set_EventPatterns([{"Product": "ecs", "NameList": list(names)}])
    assert _do(emulator, r)["Success"] is True
    t = PutEventRuleTargetsRequest()
    t.set_RuleName(name)
    t.set_MnsParameterss([{"Id": "1", "Region": emulator.region, "Queue": queue}])
    assert _do(emulator, t)["Success"] is True


def _create(emulator, name="ecs-events", **meta):
    return mns_queue(emulator, name).create(QueueMeta(**meta))


def _drain(queue, want: int = 1, seconds: float = 10.0) -> list[dict]:
    """Receive (and delete) until `want` envelopes arrived and the queue is then empty, or
    `seconds` pass."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            m = queue.receive_message(1)
        except MNSServerException as e:
            assert e.type == "MessageNotExist"
            if len(out) >= want:
                break
            continue
        queue.delete_message(m.receipt_handle)
        out.append(json.loads(base64.b64decode(m.message_body)))
    return out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK warns about the depth fields it parses
def test_create_queue_is_idempotent_and_conflicts_on_different_attributes(emulator):
    url = _create(emulator, vis_timeout=60, polling_wait_sec=20, msg_ttl=86400)
    assert url.endswith("/queues/ecs-events")
    assert _create(emulator, vis_timeout=60, polling_wait_sec=20, msg_ttl=86400) == url  # 204: same
    with pytest.raises(MNSServerException) as e:
        _create(emulator, vis_timeout=61)
    assert e.value.type == "QueueAlreadyExist"
    q = mns_queue(emulator, "ecs-events")
    q.set_attributes(QueueMeta(vis_timeout=90))
    meta = q.get_attributes()
    assert (meta.visibility_timeout, meta.polling_wait_seconds, meta.message_retention_period) == (90, 20, 86400)
    body = b'<?xml version="1.0" encoding="UTF-8"?><Queue xmlns="http://mns.aliyuncs.com/doc/v1/">' \
           b"<VisibilityTimeout>50000</VisibilityTimeout></Queue>"  # past the documented 1..43200
    from ecs_worker.emulator import mns_xml as emulated
    with pytest.raises(emulated.MnsErrorResponse) as e:
        emulated.parse_queue_attributes(body)
    assert e.value.code == "InvalidArgument" and "VisibilityTimeout" in e.value.message


def test_rules_read_back_in_the_documented_shapes(emulator):
    _create(emulator)  # a target must name an existing queue (PutEventRuleTargets' FailedMnsParameters)
    _rule(emulator, names=("Instance:StateChange", "Instance:PreemptibleInstanceInterruption"))
    r = DescribeEventRuleListRequest()
    r.set_NamePrefix("ecs-worker")
    rules = _do(emulator, r)["EventRules"]["EventRule"]
    assert [x["Name"] for x in rules] == ["ecs-worker"]
    pattern = rules[0]["EventPattern"]["EventPattern"][0]
    assert pattern["Product"] == "ecs"
    assert pattern["NameList"]["NameList"] == ["Instance:StateChange", "Instance:PreemptibleInstanceInterruption"]
    t = DescribeEventRuleTargetListRequest()
    t.set_RuleName("ecs-worker")
    (target,) = _do(emulator, t)["MnsParameters"]["MnsParameter"]
    assert target["Queue"] == "ecs-events" and target["Arn"].endswith(":/queues/ecs-events/messages")


def test_no_rule_no_delivery(emulator):
    _create(emulator)
    r = StopInstanceRequest()
    r.set_InstanceId(WEB1)
    _do(emulator, r)
    time.sleep(0.6)
    assert emulator.state()["queues"]["ecs-events"]["visible"] == 0
    assert [e["state"] for e in emulator.state()["fleet_events"]] == ["Stopping", "Stopped"]


def test_stop_and_start_publish_each_state_when_it_happens(emulator):
    _create(emulator)
    _rule(emulator)
    stop = StopInstanceRequest()
    stop.set_InstanceId(WEB1)
    _do(emulator, stop)
    queue = mns_queue(emulator, "ecs-events")
    # Nobody reads the instance: the fleet clock still publishes Stopped when it is due.
    got = _drain(queue, want=2)
    assert [e["content"]["state"] for e in got] == ["Stopping", "Stopped"]
    env = got[0]
    assert env["name"] == "Instance:StateChange" and env["product"] == "ECS" and env["level"] == "INFO"
    assert env["resourceId"] == f"acs:ecs:{emulator.region}:{emulator.account_id}:instance/{WEB1}"
    assert env["content"]["resourceId"] == WEB1 and env["userId"] == emulator.account_id
    start = StartInstanceRequest()
    start.set_InstanceId(WEB1)
    _do(emulator, start)
    got = _drain(queue, want=2)
    assert [e["content"]["state"] for e in got] == ["Starting", "Running"]
    assert len({e["id"] for e in got}) == 2


def test_rule_name_filter_and_spot_interruption_over_http(emulator):
    _create(emulator)
    _rule(emulator, names=("Instance:PreemptibleInstanceInterruption",))
    req = urllib.request.Request(f"{emulator.mns_endpoint}/_emulator/events", method="POST",
                                 data=json.dumps({"type": "spot-interruption", "instance_id": SPOT,
                                                  "notice_seconds": 0.2, "release_seconds": 0.2}).encode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as r:
        assert json.loads(r.read())["scheduled"] == {"Stopped": 0.2, "Deleted": 0.4}
    got = _drain(mns_queue(emulator, "ecs-events"))
    assert [(e["name"], e["level"], e["content"]) for e in got] == [
        ("Instance:PreemptibleInstanceInterruption", "WARN", {"instanceId": SPOT, "action": "delete"})]
    time.sleep(0.8)
    published = [(e["name"], e["state"]) for e in emulator.state()["fleet_events"]]
    assert published == [("Instance:PreemptibleInstanceInterruption", None),
                         ("Instance:StateChange", "Stopped"), ("Instance:StateChange", "Deleted")]
    assert SPOT not in {i["id"] for i in emulator.state()["instances"]}
    assert emulator.state()["queues"]["ecs-events"]["visible"] == 0  # the rule names only the notice


def test_spot_reclaim_leaves_a_recycling_lock(emulator):
    emulator.inject_event({"type": "spot-interruption", "instance_id": SPOT, "notice_seconds": 0.1,
                           "release_seconds": 60})
    time.sleep(0.5)
    inst = next(i for i in emulator.state()["instances"] if i["id"] == SPOT)
    assert inst["status"] == "Stopped" and inst["locks"] == ["Recycling"]


@pytest.mark.parametrize("bad", [{"type": "spot-interruption", "instance_id": "i-nope"},
                                 {"type": "meteor", "instance_id": SPOT},
                                 {"type": "event", "instance_id": SPOT, "name": ""},
                                 {"type": "spot-interruption", "instance_id": SPOT, "notice_seconds": -1}])
def test_bad_event_requests_are_refused(emulator, bad):
    with pytest.raises(ValueError):
        emulator.inject_event(bad)


def test_route_events_shortcut_delivers_like_a_rule(emulator):
    _create(emulator)
    assert emulator.route_events("ecs-events", ("Instance:StateChange",)) == "ecs-worker-ecs-events"
    emulator.inject_event({"type": "event", "instance_id": WEB2, "name": "Instance:StateChange",
                           "content": {"resourceId": WEB2, "state": "Stopped"}})
    emulator.inject_event({"type": "event", "instance_id": WEB2, "name": "Instance:SystemFailure.Reboot",
                           "content": {}})  # not named by the rule
    got = _drain(mns_queue(emulator, "ecs-events"))
    assert [(e["name"], e["content"]) for e in got] == [
        ("Instance:StateChange", {"resourceId": WEB2, "state": "Stopped"})]


def test_hostile_rule_parameters_are_answered_not_crashed(emulator):
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.request import CommonRequest

    def call(action, **params):
        r = CommonRequest(domain=emulator.endpoint, version="2019-01-01", action_name=action)
        r.set_protocol_type("http")
        for k, v in params.items():
            r.add_query_param(k, v)
        return acs_client(emulator, auto_retry=False).do_action_with_exception(r)

    for action, params, code in [
        ("DescribeEventRuleList", {"PageSize": "lots"}, "InvalidParameter"),
        ("DescribeEventRuleList", {"PageNumber": "0"}, "InvalidParameter"),
        ("PutEventRule", {"RuleName": "r"}, "MissingParameter"),
        ("PutEventRule", {"RuleName": "r", "EventPattern.1.NameList.1": "x"}, "MissingParameter"),
        ("PutEventRule", {"RuleName": "r", "EventPattern.1.Product": "ecs", "State": "MAYBE"}, "InvalidParameter"),
        ("PutEventRuleTargets", {"RuleName": "nope", "MnsParameters.1.Id": "1"}, "ResourceNotFound"),
        ("NoSuchCmsAction", {}, "InvalidAction.NotFound"),
    ]:
        with pytest.raises(ServerException) as e:
            call(action, **params)
        assert e.value.get_error_code() == code, (action, params)
