"""Signature and STS checks of the emulator, through the unmodified SDKs."""
from __future__ import annotations

import json

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkslb.request.v20140515.DescribeLoadBalancersRequest import DescribeLoadBalancersRequest
from mns.mns_exception import MNSServerException
from mns.queue import Message

from ecs_worker.emulator import default_state
from ecs_worker.emulator.auth import rpc_string_to_sign
from ecs_worker.testing import acs_client, mns_queue

STS_ID, STS_SECRET, STS_TOKEN = "STS.emulatorKey", "sts-secret", "sts-token-value+/="


@pytest.fixture
def emulator_state():
    state = default_state()
    state["credentials"].append({"access_key_id": STS_ID, "access_key_secret": STS_SECRET,
                                 "security_token": STS_TOKEN})
    return state


def mns_error(queue) -> MNSServerException:
    with pytest.raises(MNSServerException) as exc:
        queue.send_message(Message("x"))
    return exc.value


def rpc_error(client, emulator, request=None) -> ServerException:
    request = request or DescribeInstancesRequest()
    request.set_endpoint(emulator.endpoint)
    with pytest.raises(ServerException) as exc:
        client.do_action_with_exception(request)
    return exc.value


def test_mns_wrong_key_id_and_wrong_secret(emulator):
    assert mns_error(mns_queue(emulator, "ecs-events", access_key_id="LTAIunknown")).type == "InvalidAccessKeyId"
    assert mns_error(mns_queue(emulator, "ecs-events", access_key_secret="wrong")).type == "SignatureDoesNotMatch"
    mns_queue(emulator, "ecs-events").send_message(Message("right"))


def test_mns_security_token_header(emulator):
    good = mns_queue(emulator, "ecs-events", access_key_id=STS_ID, access_key_secret=STS_SECRET,
                     security_token=STS_TOKEN)
    good.send_message(Message("sts ok"))
    assert good.receive_message(0).message_body == "sts ok"
    missing = mns_queue(emulator, "ecs-events", access_key_id=STS_ID, access_key_secret=STS_SECRET)
    assert mns_error(missing).type == "AccessDenied"


def test_rpc_wrong_key_id_is_invalid_access_key_id_not_found(emulator):
    err = rpc_error(AcsClient("LTAIunknown", emulator.access_key_secret, emulator.region, auto_retry=False), emulator)
    assert (err.get_http_status(), err.get_error_code()) == (404, "InvalidAccessKeyId.NotFound")


def test_rpc_wrong_secret_is_signature_does_not_match(emulator):
    # The server answers 400 SignatureDoesNotMatch with "server string to sign is:<sts>"; the core SDK
    # recognises its own string-to-sign there and reports InvalidAccessKeySecret, as against the real API.
    client = acs_client(emulator, access_key_secret="wrong", auto_retry=False)
    err = rpc_error(client, emulator, DescribeLoadBalancersRequest())
    assert err.get_http_status() == 400
    assert err.get_error_code() == "InvalidAccessKeySecret"


def test_rpc_string_to_sign_matches_the_sdk_byte_for_byte():
    params = {"Action": "DescribeInstances", "Tag.1.Key": "a b*~+/:", "Timestamp": "2026-01-01T00:00:00Z",
              "Name": "ünï"}
    from aliyunsdkcore.auth.composer import rpc_signature_composer as composer
    sdk = getattr(composer, "__compose_string_to_sign")  # module-private, so no name mangling
    assert rpc_string_to_sign("POST", params) == sdk("POST", params)


def test_rpc_sts_token(emulator):
    client = AcsClient(region_id=emulator.region, auto_retry=False,
                       credential=StsTokenCredential(STS_ID, STS_SECRET, STS_TOKEN))
    req = DescribeInstancesRequest()
    req.set_endpoint(emulator.endpoint)
    assert json.loads(client.do_action_with_exception(req))["TotalCount"] == 3
    no_token = AcsClient(STS_ID, STS_SECRET, emulator.region, auto_retry=False)
    err = rpc_error(no_token, emulator)
    assert (err.get_http_status(), err.get_error_code()) == (400, "InvalidSecurityToken.MismatchWithAccessKey")


def test_inspection_needs_no_signature(emulator):
    assert emulator.get("/_emulator/state")["region"] == emulator.region
