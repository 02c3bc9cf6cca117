"""Where the real cloud differs from a naive emulator (issue 11), end to end: MNS past its
long-poll limit, RAM policies, and the worker's answers to both. docs/cloud-behaviour.md
lists each behaviour with its source and the test that holds it."""
from __future__ import annotations

import copy
import json
import random
import threading
import time
from pathlib import Path

import pytest

from ecs_worker.cloud.apis import mns_ram
from ecs_worker.cloud.credentials import Credentials, StaticProvider
from ecs_worker.queue.source import EARLY_EMPTY_JITTER, PERMANENT_CODES, MnsError, MnsQueue, early_empty_delay
from runner_kit import QUEUE, Setup, Worker, event_body, wait_until


def _queue(emulator, wait=2) -> MnsQueue:
    creds = Credentials(emulator.access_key_id, emulator.access_key_secret)
    return MnsQueue(emulator.mns_endpoint, QUEUE, StaticProvider(creds), wait_seconds=wait, ram=mns_ram)


def test_early_empty_backoff_grows_is_capped_at_the_wait_and_jitters_only_upwards():
    rng = random.Random(7)
    delays = [early_empty_delay(n, 20, rng) for n in range(1, 12)]
    assert delays[0] < 1 and delays[1] < 2 < delays[3]  # grows
    assert all(20 <= d <= 20 * (1 + EARLY_EMPTY_JITTER) for d in delays[6:])  # capped, never under the wait
    # Steady state: at most one call per wait, i.e. 3600 / wait_seconds an hour.
    assert 3600 / min(delays[6:]) <= 3600 / 20


def test_an_early_empty_answer_backs_off_and_stop_cuts_the_pause_short(emulator):
    emulator.set_faults({"mns": {"long_poll_limit": 0}})
    source = _queue(emulator, wait=10)
    source.early_empties = 5  # next pause about 10 s
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    assert source.receive(16, 10, stop) == []
    assert 0.25 <= time.monotonic() - t0 < 2.0
    emulator.set_faults({"mns": {}})
    emulator.send(QUEUE, event_body("e-after"))
    assert len(source.receive(16, 10)) == 1 and source.early_empties == 0


@pytest.mark.slow
def test_past_the_long_poll_limit_an_idle_worker_polls_about_once_per_wait(emulator, tmp_path):
    """Before the fix one worker made 5,377 receive calls in 3 s against this emulator mode."""
    emulator.set_faults({"mns": {"long_poll_limit": 0}})
    setup = Setup(tmp_path, emulator)
    wait = 2
    worker = Worker(setup.config(mns__wait_seconds=wait))
    try:
        wait_until(lambda: emulator.state()["calls"].get("mns:BatchReceiveMessage", 0) >= 1, 20,
                   message="the first receive")
        emulator.reset_calls()
        window = 8.0
        time.sleep(window)
        calls = emulator.state()["calls"].get("mns:BatchReceiveMessage", 0)
        # A ramp (0.5, 1, 2 s) then one call per wait: about 6; never the spin of thousands.
        assert 2 <= calls <= window / wait + 4, calls
        # The limit lifts: the worker's next poll is a real long poll and takes the event.
        emulator.set_faults({"mns": {}})
        emulator.send(QUEUE, event_body("after-limit"))
        wait_until(lambda: "after-limit" in setup.lines("done"), wait * 2 + 10, message="the event handled")
        worker.signal()
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.stop()


# ---------------------------------------------------------------------------- RAM

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((ROOT / "deploy" / "ram-policy.json").read_text())
DLQ_NAME = "ecs-events-dlq"


def policy_actions(policy=SHIPPED) -> set[str]:
    return {a for st in policy["Statement"] if st["Effect"] == "Allow" for a in st["Action"]}


def denying(action: str, resource: str = "*") -> dict:
    policy = copy.deepcopy(SHIPPED)
    policy["Statement"].append({"Effect": "Deny", "Action": action, "Resource": resource})
    return policy


def test_the_emulator_enforces_a_policy_explicit_deny_winning_and_wildcards(emulator):
    source = _queue(emulator, wait=1)
    emulator.set_ram_policy({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "mns:*", "Resource": "acs:mns:*:*:/queues/ecs-*"},
        {"Effect": "Deny", "Action": "MNS:batchdeletemessage", "Resource": "*"}]})
    assert source.visibility_timeout() > 0  # GetQueueAttributes on /queues/ecs-events: allowed
    emulator.send(QUEUE, event_body("e-ram"))
    (m,) = source.receive(16, 1)
    with pytest.raises(MnsError) as denied:  # Deny wins over the wildcard Allow, case-insensitively
        source.delete_batch([m.receipt_handle])
    assert denied.value.code == "AccessDenied" and denied.value.permanent
    creds = Credentials(emulator.access_key_id, emulator.access_key_secret)
    other = MnsQueue(emulator.mns_endpoint, "elsewhere", StaticProvider(creds), wait_seconds=1)
    with pytest.raises(MnsError) as not_allowed:  # matches no Allow: refused before "no such queue"
        other.visibility_timeout()
    assert not_allowed.value.code == "AccessDenied"
    with pytest.raises(Exception, match="Condition"):
        emulator.set_ram_policy({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}]})
    emulator.set_ram_policy(None)
    source.delete_batch([m.receipt_handle])


MNS_CALLS = {  # MNS API -> how the worker makes that call
    "GetQueueAttributes": lambda q, dlq: q.visibility_timeout(),
    "BatchReceiveMessage": lambda q, dlq: q.receive(16, 1),
    "BatchDeleteMessage": lambda q, dlq: q.delete_batch(["1-AAAAAAAAAAEAAAAAAAAAAA=="]),
    "ChangeMessageVisibility": lambda q, dlq: q.change_visibility("1-AAAAAAAAAAEAAAAAAAAAAA==", 5),
    "SendMessage": lambda q, dlq: q.send("{}"),
}


@pytest.mark.parametrize("reading", ["api", "table"])
@pytest.mark.parametrize("action", sorted(MNS_CALLS))
def test_denied_any_mns_action_the_error_names_it_under_both_readings(emulator, action, reading):
    """Whichever RAM action the service checks (Alibaba's pages disagree for the batch calls),
    refusing it is reported naming every action that could be the one (the registry's)."""
    from ecs_worker.cloud.apis import ram_text
    from ecs_worker.emulator.ram import MNS_READINGS

    emulator.set_mns_ram_reading(reading)
    checked = "mns:" + MNS_READINGS[reading].get(action, action)
    emulator.set_ram_policy(denying(checked, f"acs:mns:*:*:/queues/{QUEUE}*"))
    source = _queue(emulator, wait=1)
    with pytest.raises(MnsError) as denied:
        MNS_CALLS[action](source, None)
    assert denied.value.code == "AccessDenied" and denied.value.permanent
    assert f"the RAM policy must allow {ram_text('mns', action)} on acs:mns:*:*:/queues/{QUEUE}" in str(denied.value)
    assert checked in ram_text("mns", action)


@pytest.fixture
def emulator_state():
    """The example world plus an ALB and an NLB server group (issue 14), so every RPC action
    of the shipped policy has something to act on."""
    from ecs_worker.emulator import default_state

    state = default_state()
    for kind in ("alb", "nlb"):
        state[f"{kind}_server_groups"] = [{"id": f"sgp-bp1{kind}", "load_balancer_id": f"{kind}-bp1example01",
                                           "servers": [{"server_id": "i-bp1spot00000000001", "port": 80}]}]
    state["job_delay_seconds"] = 0
    return state


def _served(call, action: str, **params):
    """The call as RAM sees it: answered by the service (an unknown job id included) is
    allowed; only `Forbidden.RAM` counts as refused."""
    from ecs_worker.cloud import CloudError

    try:
        return call(action, **params)
    except CloudError as exc:
        if exc.code in ("Forbidden.RAM", "Forbidden.NoPermission"):
            raise


SPOT_80 = [{"ServerId": "i-bp1spot00000000001", "ServerType": "Ecs", "Port": 80}]
WEB_80 = [{"ServerId": "i-bp1web000000000002", "ServerType": "Ecs", "Port": 80, "Weight": 100}]

RPC_CALLS = {
    "ecs:DescribeInstances": lambda c: c.ecs("DescribeInstances", InstanceIds=["i-bp1web000000000001"]),
    "ecs:StartInstance": lambda c: c.ecs("StartInstance", InstanceId="i-bp1web000000000002"),
    # issue 14: the maintenance plugin and ALB/NLB server groups
    "ecs:RebootInstance": lambda c: c.ecs("RebootInstance", InstanceId="i-bp1web000000000001"),
    "ecs:DescribeInstanceHistoryEvents": lambda c: c.ecs("DescribeInstanceHistoryEvents",
                                                         InstanceId="i-bp1web000000000001"),
    "slb:AddVServerGroupBackendServers": lambda c: c.slb(
        "AddVServerGroupBackendServers", VServerGroupId="rsp-bp1web80",
        BackendServers=[{"ServerId": "i-bp1web000000000002", "Port": "80", "Weight": "100"}]),
    **{f"{kind}:{action}": (lambda c, k=kind, a=action, p=params: _served(getattr(c, k), a, **p))
       for kind in ("alb", "nlb")
       for action, params in {
           "ListServerGroups": {},
           "ListServerGroupServers": {"ServerGroupId": f"sgp-bp1{kind}"},
           "RemoveServersFromServerGroup": {"ServerGroupId": f"sgp-bp1{kind}", "Servers": SPOT_80},
           "AddServersToServerGroup": {"ServerGroupId": f"sgp-bp1{kind}", "Servers": WEB_80},
           "UpdateServerGroupServersAttribute": {"ServerGroupId": f"sgp-bp1{kind}",
                                                 "Servers": [dict(SPOT_80[0], Weight=0)]},
           "ListListeners": {"LoadBalancerIds": [f"{kind}-bp1example01"]},  # issue 22: the guard's health reads
           "GetListenerHealthStatus": {"ListenerId": f"lsn-sgp-bp1{kind}"},
           **({"ListAsynJobs": {"JobIds": ["0f0e0d0c-unknown"]}} if kind == "alb"
              else {"GetJobStatus": {"JobId": "0f0e0d0c-unknown"}}),
       }.items()},
    "slb:DescribeLoadBalancers": lambda c: c.slb("DescribeLoadBalancers", ServerId="i-bp1spot00000000001"),
    "slb:DescribeVServerGroups": lambda c: c.slb("DescribeVServerGroups", LoadBalancerId="lb-bp1example000001"),
    "slb:DescribeVServerGroupAttribute": lambda c: c.slb("DescribeVServerGroupAttribute",
                                                         VServerGroupId="rsp-bp1web80"),
    "slb:DescribeHealthStatus": lambda c: c.slb("DescribeHealthStatus", LoadBalancerId="lb-bp1example000001"),
    "slb:RemoveVServerGroupBackendServers": lambda c: c.slb(
        "RemoveVServerGroupBackendServers", VServerGroupId="rsp-bp1web80",
        BackendServers=[{"ServerId": "i-bp1spot00000000001", "Port": "80"}]),
    "slb:SetVServerGroupAttribute": lambda c: c.slb(
        "SetVServerGroupAttribute", VServerGroupId="rsp-bp1web80",
        BackendServers=[{"ServerId": "i-bp1spot00000000001", "Port": "80", "Weight": "0"}]),
    # issue 23: the scaling plugin's lifecycle actions (an unknown token is answered, so allowed)
    "ess:DescribeLifecycleActions": lambda c: c.ess("DescribeLifecycleActions", ScalingActivityId="asa-none"),
    "ess:DescribeLifecycleHooks": lambda c: c.ess("DescribeLifecycleHooks", **{"LifecycleHookId.1": "ash-none"}),
    "ess:RecordLifecycleActionHeartbeat": lambda c: _served(c.ess, "RecordLifecycleActionHeartbeat",
                                                            lifecycleHookId="ash-none", lifecycleActionToken="T"),
    "ess:CompleteLifecycleAction": lambda c: _served(c.ess, "CompleteLifecycleAction", LifecycleHookId="ash-none",
                                                     LifecycleActionToken="T", LifecycleActionResult="CONTINUE"),
}


def test_the_shipped_policy_lists_exactly_the_calls_the_worker_makes():
    from ecs_worker.cloud.apis import api

    assert policy_actions() == {r for a in MNS_CALLS for r in api("mns", a).ram} | set(RPC_CALLS)


@pytest.mark.parametrize("action", sorted(RPC_CALLS))
def test_denied_any_ecs_or_slb_action_the_error_names_it(emulator, action):
    from ecs_worker.cloud import CloudClient, CloudError
    from ecs_worker.config import CloudConfig

    cloud = CloudClient(CloudConfig(region=emulator.region, endpoint=emulator.endpoint, protocol="http", max_retries=2),
                  StaticProvider(Credentials(emulator.access_key_id, emulator.access_key_secret)))
    emulator.set_ram_policy(SHIPPED)
    RPC_CALLS[action](cloud)  # allowed by the shipped policy
    emulator.set_ram_policy(denying(action))
    emulator.reset_calls()
    with pytest.raises(CloudError) as denied:
        RPC_CALLS[action](cloud)
    # ALB and NLB list a RAM denial as Forbidden.NoPermission in their error tables (item 6)
    code = "Forbidden.NoPermission" if action.split(":")[0] in ("alb", "nlb") else "Forbidden.RAM"
    assert denied.value.code == code and not denied.value.retryable
    assert f"the RAM policy does not allow {action}" in str(denied.value)
    assert sum(emulator.state()["calls"].values()) == 1  # not retried


@pytest.mark.slow
@pytest.mark.parametrize("queue", [QUEUE, DLQ_NAME])
def test_denied_get_queue_attributes_at_start_up_exits_2_naming_it(emulator, tmp_path, queue):
    emulator.set_ram_policy(denying("mns:GetQueueAttributes", f"acs:mns:*:*:/queues/{queue}"))
    setup = Setup(tmp_path, emulator)
    worker = Worker(setup.config(mns__dead_letter_queue=DLQ_NAME))
    try:
        assert worker.wait(30) == 2, worker.output()
    finally:
        worker.stop()
    assert f"the RAM policy must allow mns:GetQueueAttributes on acs:mns:*:*:/queues/{queue}" in worker.output()


@pytest.mark.slow
def test_denied_start_instance_later_the_failure_names_it(emulator, tmp_path):
    emulator.set_ram_policy(denying("ecs:StartInstance"))
    setup = Setup(tmp_path, emulator, plugins__disabled=["hello", "slb", "webhook"])
    stopped = json.dumps({
        "ver": "1.0", "id": "evt-denied-start", "product": "ECS", "level": "INFO", "name": "Instance:StateChange",
        "regionId": emulator.region, "eventTime": "20261127T121826.922+0800",
        "resourceId": f"acs:ecs:{emulator.region}:1690000000000000:instance/i-bp1web000000000002",
        "content": {"resourceId": "i-bp1web000000000002", "state": "Stopped"}})
    emulator.send(QUEUE, stopped)
    config = setup.config()
    text = config.read_text() + "\n[plugins.restart]\ngrace_seconds = 0\n"
    config.write_text(text)
    worker = Worker(config)
    try:
        wait_until(lambda: "ecs:StartInstance" in worker.output(), 30, message="the denial logged")
        worker.signal()
        worker.wait(20)
    finally:
        worker.stop()
    assert "the RAM policy does not allow ecs:StartInstance" in worker.output()


# ---------------------------------------------------------------------------- MNS error classes

MNS_TRANSIENT = ["InternalError", "InternalServerError", "TooManyRequests", "QpsLimitExceeded", "TimeExpired"]


@pytest.mark.parametrize("code", sorted(PERMANENT_CODES) + MNS_TRANSIENT)
def test_each_mns_code_is_permanent_or_transient_as_listed(emulator, code):
    """Permanent codes stop start-up (exit 2); the rest back off and try again."""
    emulator.set_faults({"mns": {"error_rate": 1.0, "error_code": code}})
    with pytest.raises(MnsError) as caught:
        _queue(emulator).visibility_timeout()
    assert caught.value.code == code
    assert caught.value.permanent is (code in PERMANENT_CODES)


def test_a_bad_ram_policy_in_a_state_file_is_a_clear_error():
    from ecs_worker.emulator import StateError, default_state, validate

    state = default_state()
    state["ram_policy"] = {"Version": "1", "Statement": [{"Effect": "Permit", "Action": "*", "Resource": "*"}]}
    with pytest.raises(StateError, match=r"ram_policy.Statement\[0\].Effect: must be Allow or Deny"):
        validate(state, source="state.json")


def test_policy_wildcards_match_like_ram_and_a_hostile_pattern_stays_fast():
    from ecs_worker.emulator.ram import Policy

    policy = Policy({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": ["mns:*"], "Resource": ["acs:mns:*:*:/queues/ecs-events"]},
        {"Effect": "Allow", "Action": ["*a" * 40 + "b"], "Resource": ["*"]}]})
    assert policy.allows("MNS:GetQueueAttributes", "acs:mns:cn-hangzhou:1:/queues/ecs-events")
    assert not policy.allows("mns:GetQueueAttributes", "acs:mns:cn-hangzhou:1:/queues/ecs-events/messages")
    assert not policy.allows("ecs:StartInstance", "acs:ecs:cn-hangzhou:1:instance/i-1")
    started = time.monotonic()
    assert not policy.allows("a" * 20_000, "*")
    assert time.monotonic() - started < 5
