"""Injected faults (errors, latency, throttling, dropped connections) and call counting."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.StartInstanceRequest import StartInstanceRequest
from aliyunsdkslb.request.v20140515.DescribeLoadBalancersRequest import DescribeLoadBalancersRequest
from mns.mns_exception import MNSClientNetworkException, MNSServerException
from mns.queue import Message

from ecs_worker.emulator import default_state
from ecs_worker.testing import acs_client, mns_queue, run_emulator


def rpc(emulator, request, client=None):
    request.set_endpoint(emulator.endpoint)
    return json.loads((client or acs_client(emulator, auto_retry=False)).do_action_with_exception(request))


def post_json(emulator, path, obj):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(emulator.mns_endpoint + path, data=json.dumps(obj).encode(), method="POST")
    with opener.open(req, timeout=5) as r:
        return json.loads(r.read())


def test_error_rate_with_chosen_code_and_status(emulator):
    emulator.set_faults({"ecs": {"error_rate": 1.0, "error_code": "ServiceUnavailable", "error_status": 503},
                         "mns": {"error_rate": 1.0}})
    with pytest.raises(ServerException) as exc:
        rpc(emulator, StartInstanceRequest())
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (503, "ServiceUnavailable")
    with pytest.raises(MNSServerException) as mexc:
        mns_queue(emulator, "ecs-events").send_message(Message("x"))
    assert mexc.value.type == "InternalError"
    assert rpc(emulator, DescribeLoadBalancersRequest())["TotalCount"] == 1  # slb untouched
    emulator.set_faults({"ecs": {}})
    assert rpc(emulator, DescribeInstancesRequest())["TotalCount"] == 3


def test_throttling_rpc_and_mns(emulator):
    emulator.set_faults({"slb": {"throttle_rps": 1}, "mns": {"throttle_rps": 2, "throttle_burst": 2}})
    client = acs_client(emulator, auto_retry=False)
    rpc(emulator, DescribeLoadBalancersRequest(), client)
    with pytest.raises(ServerException) as exc:
        rpc(emulator, DescribeLoadBalancersRequest(), client)
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (400, "Throttling.User")
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("1"))
    q.send_message(Message("2"))
    with pytest.raises(MNSServerException) as mexc:
        q.send_message(Message("3"))
    assert mexc.value.type == "TooManyRequests"
    time.sleep(0.55)  # the bucket refills at 2/s
    q.send_message(Message("4"))
    assert emulator.state()["calls"]["mns:SendMessage"] == 4


def test_latency(emulator):
    emulator.set_faults({"mns": {"latency_ms": 300}})
    q = mns_queue(emulator, "ecs-events")
    t0 = time.monotonic()
    q.send_message(Message("slow"))
    assert time.monotonic() - t0 >= 0.3


def test_dropped_connections(emulator):
    emulator.set_faults({"mns": {"drop_rate": 1.0}, "ecs": {"drop_rate": 1.0}})
    with pytest.raises(MNSClientNetworkException) as mexc:
        mns_queue(emulator, "ecs-events").send_message(Message("lost"))
    assert mexc.value.type == "NetWorkException"
    with pytest.raises(ClientException) as exc:
        rpc(emulator, StartInstanceRequest())
    assert exc.value.get_error_code() == "SDK.HttpError"
    emulator.set_faults({"mns": {}})
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("fine"))
    assert emulator.state()["queues"]["ecs-events"]["visible"] == 1  # the dropped send never landed


def test_faults_from_state_and_over_http():
    state = default_state()
    state["faults"] = {"ecs": {"error_rate": 1.0, "error_code": "InternalError", "error_status": 500}}
    with run_emulator(state) as emu:
        with pytest.raises(ServerException) as exc:
            rpc(emu, StartInstanceRequest())
        assert exc.value.get_error_code() == "InternalError"
        assert post_json(emu, "/_emulator/faults", {"ecs": {}})["ecs"] == {}
        rpc(emu, DescribeInstancesRequest())
        with pytest.raises(urllib.error.HTTPError) as bad:
            post_json(emu, "/_emulator/faults", {"ecs": {"error_rate": 2}})
        assert "ecs.error_rate" in json.loads(bad.value.read())["error"]


def test_calls_are_counted_and_reset(emulator):
    start = StartInstanceRequest()
    start.set_InstanceId("i-bp1web000000000002")
    rpc(emulator, start)
    rpc(emulator, DescribeLoadBalancersRequest())
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("a"))
    q.batch_receive_message(16, 0)
    calls = emulator.get("/_emulator/state")["calls"]
    assert calls == {"ecs:StartInstance": 1, "slb:DescribeLoadBalancers": 1, "mns:SendMessage": 1,
                     "mns:BatchReceiveMessage": 1}
    post_json(emulator, "/_emulator/reset-calls", {})
    assert emulator.state()["calls"] == {}


@pytest.mark.parametrize("code,status", [("SystemBusy", 449), ("BackendServer.configuring", 409),
                                         ("ServiceUnavailable", 503), ("Forbidden.RAM", 403),
                                         ("ProcessingSameRequest", 400)])
def test_a_chosen_code_answers_with_its_documented_status(emulator, code, status):
    emulator.set_faults({"slb": {"error_rate": 1.0, "error_code": code}})
    with pytest.raises(ServerException) as exc:
        rpc(emulator, DescribeLoadBalancersRequest())
    assert (exc.value.get_http_status(), exc.value.get_error_code()) == (status, code)


def test_error_codes_pick_among_several(emulator):
    emulator.set_faults({"slb": {"error_rate": 1.0, "error_codes": [
        "SystemBusy", {"code": "OperationBusy", "status": 400}, {"code": "Odd", "status": 418}]}})
    seen = set()
    for _ in range(60):
        with pytest.raises(ServerException) as exc:
            rpc(emulator, DescribeLoadBalancersRequest())
        seen.add((exc.value.get_http_status(), exc.value.get_error_code()))
    assert seen == {(449, "SystemBusy"), (400, "OperationBusy"), (418, "Odd")}
    with pytest.raises(Exception, match="long_poll_limit: only mns"):
        emulator.set_faults({"slb": {"long_poll_limit": 1}})


def test_past_the_long_poll_limit_receives_answer_at_once(emulator):
    emulator.set_faults({"mns": {"long_poll_limit": 1}})
    holder = mns_queue(emulator, "ecs-events")
    started = time.monotonic()
    waiting = threading.Thread(target=lambda: pytest.raises(MNSServerException, holder.batch_receive_message, 16, 2))
    waiting.start()
    time.sleep(0.3)  # the first long poll now holds the only slot
    other = mns_queue(emulator, "ecs-events")
    t0 = time.monotonic()
    with pytest.raises(MNSServerException) as exc:
        other.batch_receive_message(16, 5)
    assert exc.value.type == "MessageNotExist" and time.monotonic() - t0 < 1.0
    waiting.join()
    assert time.monotonic() - started >= 1.9  # the first one really waited
    emulator.set_faults({"mns": {"long_poll_limit": 0}})
    other.send_message(Message("waiting"))
    t0 = time.monotonic()
    with pytest.raises(MNSServerException):  # even with a message there: refused at once
        other.receive_message(3)
    assert time.monotonic() - t0 < 1.0
    assert other.receive_message(0).message_body == "waiting"  # a short poll is not limited
