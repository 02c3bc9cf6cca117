"""Where our own emulator was kinder than the cloud (issue 18, items 5 and 6), each fixed in the
emulator and in the worker: a partly failed PutEventRuleTargets, ALB/NLB's RAM denial code, NLB's
all-port groups, and `setup`'s queue errors naming the RAM action (not the endpoint)."""
from __future__ import annotations

import io

import pytest

from ecs_worker.cloud import CloudClient, CloudError
from ecs_worker.cloud.cms import CloudMonitor, MnsTarget, Rule
from ecs_worker.config import CloudConfig
from ecs_worker.cloud.credentials import Credentials, StaticProvider
from ecs_worker.emulator.state import StateError, validate

SPOT = "i-bp1spot00000000001"


def _cloud(emulator) -> CloudClient:
    return CloudClient(CloudConfig(region=emulator.region, endpoint=emulator.endpoint, protocol="http",
                                   max_retries=1),
                       StaticProvider(Credentials(emulator.access_key_id, emulator.access_key_secret)))


@pytest.fixture
def emulator_state():
    from ecs_worker.emulator import default_state

    state = default_state()
    state["nlb_server_groups"] = [{"id": "sgp-allports", "servers": [{"server_id": SPOT, "port": 0}]}]
    state["job_delay_seconds"] = 0
    return state


def test_a_target_cloudmonitor_did_not_create_is_an_error_not_done(emulator):
    """PutEventRuleTargets answers 200 with FailedParameterCount / FailedMnsParameters."""
    monitor = CloudMonitor(_cloud(emulator))
    monitor.put_rule(Rule("r", "ENABLED", "ecs", ("Instance:StateChange",)))
    with pytest.raises(CloudError) as failed:
        monitor.put_target("r", MnsTarget("1", emulator.region, "no-such-queue"))
    assert failed.value.code == "FailedParameters" and "no-such-queue" in str(failed.value)
    assert monitor.targets("r") == []
    monitor.put_target("r", MnsTarget("1", emulator.region, "ecs-events"))  # an existing queue: created
    assert [t.queue for t in monitor.targets("r")] == ["ecs-events"]


@pytest.mark.parametrize("kind", ["alb", "nlb"])
def test_an_alb_or_nlb_denial_is_recognised_and_names_the_ram_action(emulator, kind):
    emulator.set_ram_policy({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]})
    with pytest.raises(CloudError) as denied:
        _cloud(emulator).call(kind, "ListServerGroups", {"MaxResults": 1})
    assert denied.value.code == "Forbidden.NoPermission" and not denied.value.retryable
    assert f"the RAM policy does not allow {kind}:ListServerGroups" in str(denied.value)


def test_nlb_takes_port_0_an_all_port_group_and_alb_does_not():
    base = {"region": "cn-hangzhou", "account_id": "1", "credentials": [{"access_key_id": "k",
                                                                          "access_key_secret": "s"}]}
    validate({**base, "nlb_server_groups": [{"id": "g", "servers": [{"server_id": SPOT, "port": 0}]}]})
    with pytest.raises(StateError, match="port"):
        validate({**base, "alb_server_groups": [{"id": "g", "servers": [{"server_id": SPOT, "port": 0}]}]})


def test_the_slb_plugin_takes_an_instance_out_of_an_nlb_all_port_group(emulator, harness):
    from ecs_worker.plugins.slb import SlbPlugin
    from ecs_worker.testing import interruption

    h = harness(SlbPlugin(), config={"kinds": ["nlb"]}, dry_run=False, emulator=emulator)
    result = h.dispatch(interruption(SPOT))
    assert result.outcome == "handled", result.error
    (group,) = emulator.state()["nlb_server_groups"]
    assert group["servers"] == []
    assert any(a.action == "RemoveServersFromServerGroup" and a.result == "ok" for a in result.actions)


def test_a_refused_queue_change_names_the_ram_action_not_the_endpoint(emulator):
    from ecs_worker.queue.admin import QueueAdmin
    from ecs_worker.queue.source import MnsError

    emulator.set_ram_policy({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "mns:GetQueueAttributes", "Resource": "*"}]})
    admin = QueueAdmin(emulator.mns_endpoint, StaticProvider(Credentials(emulator.access_key_id,
                                                                         emulator.access_key_secret)))
    with pytest.raises(MnsError) as denied:
        admin.create("fresh", {"visibility_timeout": 60})
    text = str(denied.value)
    assert "the RAM policy must allow mns:CreateQueue on acs:mns:*:*:/queues/fresh" in text
    assert emulator.mns_endpoint not in text.split("must allow", 1)[1]
