"""The `slb` plugin on ALB and NLB server groups, against the emulator with the real SDKs:
discovery, removal through asynchronous jobs followed to the end, a group busy with
another job, a job that never ends, one kind unreadable, dry-run and a coalesced wave."""
from __future__ import annotations

import json
import time

from ecs_worker.events.event import parse_event
from ecs_worker.plugins import slb as slb_plugin
from ecs_worker.testing import Harness, acs_client, run_emulator, with_spot_instances

REGION = "cn-hangzhou"
KEY = {"access_key_id": "LTAIsgtest0001", "access_key_secret": "sg-test-secret-0001"}


def fleet(clb=(), alb=(), nlb=(), job_seconds=0.2):
    return with_spot_instances({"region": REGION, "account_id": "1690000000000000", "credentials": [KEY],
                                "load_balancers": list(clb), "alb_server_groups": list(alb),
                                "nlb_server_groups": list(nlb), "job_delay_seconds": job_seconds})


MIXED = fleet(
    clb=[{"id": "lb-web", "vserver_groups": [{"id": "rsp-web80", "backend_servers": [
        {"server_id": "i-spot1", "port": 80}, {"server_id": "i-keep1", "port": 80}]}]}],
    alb=[{"id": "sgp-alb1", "load_balancer_id": "alb-1", "servers": [
        {"server_id": "i-spot1", "port": 8080, "weight": 60}, {"server_id": "i-keep1", "port": 8080}]},
         {"id": "sgp-alb2", "servers": [{"server_id": "i-keep1", "port": 80}]}],
    nlb=[{"id": "sgp-nlb1", "servers": [
        {"server_id": "i-spot1", "port": 443}, {"server_id": "i-spot1", "port": 8443, "type": "eni"},
        {"server_id": "i-keep1", "port": 443}]}],
)


def interruption(instance_id, n=0):
    stamp = time.strftime("%Y%m%dT%H%M%S.000+0000", time.gmtime())
    return parse_event(json.dumps({
        "ver": "1.0", "id": f"evt-{instance_id}-{n}", "product": "ECS", "level": "WARN",
        "name": "Instance:PreemptibleInstanceInterruption", "regionId": REGION, "eventTime": stamp,
        "resourceId": f"acs:ecs:{REGION}:1690000000000000:instance/{instance_id}",
        "content": {"instanceId": instance_id, "action": "delete"}}))


class Worker(Harness):
    def __init__(self, emu, dry_run=False, **slb):
        super().__init__(slb_plugin.SlbPlugin(), config=slb, dry_run=dry_run, emulator=emu, call_timeout=20)

    def handle(self, event, timeout=30):
        return self.start(event).result(timeout)


def servers(emu, kind, group):
    for g in emu.state()[f"{kind}_server_groups"]:
        if g["id"] == group:
            return {(s["server_id"], s["port"]): s["weight"] for s in g["servers"]}
    raise KeyError(group)


def calls(emu, name):
    return emu.state()["calls"].get(name, 0)


def test_spot_instance_leaves_clb_alb_and_nlb_groups_and_each_job_is_followed():
    with run_emulator(MIXED) as emu, Worker(emu) as w:
        result = w.handle(interruption("i-spot1"))

        assert result.outcome == "handled", result.error
        assert servers(emu, "alb", "sgp-alb1") == {("i-keep1", 8080): 100}
        assert servers(emu, "alb", "sgp-alb2") == {("i-keep1", 80): 100}
        assert servers(emu, "nlb", "sgp-nlb1") == {("i-keep1", 443): 100}
        assert emu.state()["load_balancers"][0]["vserver_groups"][0]["backend_servers"] == [
            {"server_id": "i-keep1", "port": 80, "weight": 100, "type": "ecs"}]
        assert calls(emu, "alb:RemoveServersFromServerGroup") == 1
        assert calls(emu, "nlb:RemoveServersFromServerGroup") == 1  # both ports in one call
        assert calls(emu, "alb:ListAsynJobs") >= 1 and calls(emu, "nlb:GetJobStatus") >= 1
        assert sorted((a.action, a.target, a.result) for a in result.actions) == [
            ("RemoveServersFromServerGroup", "alb:sgp-alb1/i-spot1:8080", "ok"),
            ("RemoveServersFromServerGroup", "nlb:sgp-nlb1/i-spot1:443", "ok"),
            ("RemoveServersFromServerGroup", "nlb:sgp-nlb1/i-spot1:8443", "ok"),
            ("RemoveVServerGroupBackendServers", "rsp-web80/i-spot1:80", "ok")]
        assert "job" in result.actions[0].detail or "job" in result.actions[-1].detail
        assert "1 ALB server group(s)" in result.plugins["slb"].detail

        again = w.handle(interruption("i-spot1", n=1))  # a duplicate finds nothing left
        assert again.outcome == "ignored"


def test_kinds_limits_what_is_touched():
    with run_emulator(MIXED) as emu, Worker(emu, kinds=["clb", "nlb"]) as w:
        result = w.handle(interruption("i-spot1"))
        assert result.outcome == "handled", result.error
        assert ("i-spot1", 8080) in servers(emu, "alb", "sgp-alb1")
        assert not [k for k in emu.state()["calls"] if k.startswith("alb:")]
        assert servers(emu, "nlb", "sgp-nlb1") == {("i-keep1", 443): 100}


def test_unknown_kind_fails_at_startup():
    with run_emulator(MIXED) as emu:
        try:
            Worker(emu, kinds=["clb", "elb"])
        except Exception as exc:
            assert "elb" in str(exc)
        else:
            raise AssertionError("an unknown kind must fail at start-up")


def test_group_busy_with_another_job_is_waited_for():
    with run_emulator(fleet(alb=MIXED["alb_server_groups"], job_seconds=1.0)) as emu, Worker(emu) as w:
        from aliyunsdkalb.request.v20200616.UpdateServerGroupServersAttributeRequest import (
            UpdateServerGroupServersAttributeRequest)

        req = UpdateServerGroupServersAttributeRequest()  # someone else's change, still running
        req.set_ServerGroupId("sgp-alb1")
        req.set_Servers([{"ServerId": "i-keep1", "ServerType": "Ecs", "Port": "8080", "Weight": "50"}])
        req.set_endpoint(emu.endpoint)
        acs_client(emu, auto_retry=False).do_action_with_exception(req)

        result = w.handle(interruption("i-spot1"))
        assert result.outcome == "handled", result.error
        assert servers(emu, "alb", "sgp-alb1") == {("i-keep1", 8080): 50}
        assert calls(emu, "alb:RemoveServersFromServerGroup") >= 2  # refused while busy, then done


def test_job_that_does_not_end_in_time_fails_the_event():
    with run_emulator(fleet(nlb=MIXED["nlb_server_groups"], job_seconds=30)) as emu, \
            Worker(emu, kinds=["nlb"], job_timeout=1) as w:
        result = w.handle(interruption("i-spot1"))
        assert result.outcome == "failed"
        assert "Job.Timeout" in result.error


def test_one_kind_unreadable_still_removes_from_the_others_and_fails_for_a_retry():
    with run_emulator(MIXED) as emu, Worker(emu) as w:
        emu.set_faults({"alb": {"error_rate": 1.0, "error_code": "Forbidden.RAM", "error_status": 403}})
        result = w.handle(interruption("i-spot1"))
        assert result.outcome == "failed"
        assert "Forbidden.RAM" in result.error
        assert servers(emu, "nlb", "sgp-nlb1") == {("i-keep1", 443): 100}
        assert ("i-spot1", 8080) in servers(emu, "alb", "sgp-alb1")

        emu.set_faults({"alb": {}})
        retry = w.handle(interruption("i-spot1", n=2))
        assert retry.outcome == "handled", retry.error
        assert servers(emu, "alb", "sgp-alb1") == {("i-keep1", 8080): 100}


def test_alb_throttling_is_retried():
    with run_emulator(MIXED) as emu, Worker(emu) as w:
        emu.set_faults({"alb": {"throttle_rps": 3, "throttle_burst": 1}})
        result = w.handle(interruption("i-spot1"))
        assert result.outcome == "handled", result.error
        assert servers(emu, "alb", "sgp-alb1") == {("i-keep1", 8080): 100}


def test_dry_run_plans_every_kind_and_changes_nothing():
    with run_emulator(MIXED) as emu, Worker(emu, dry_run=True) as w:
        result = w.handle(interruption("i-spot1"))
        assert result.outcome == "handled", result.error
        assert {(a.action, a.target, a.result) for a in result.actions} >= {
            ("RemoveServersFromServerGroup", "alb:sgp-alb1/i-spot1:8080", "planned"),
            ("RemoveServersFromServerGroup", "nlb:sgp-nlb1/i-spot1:8443", "planned")}
        assert ("i-spot1", 8080) in servers(emu, "alb", "sgp-alb1")
        assert not [k for k in emu.state()["calls"] if k.endswith("RemoveServersFromServerGroup")]


def test_drain_sets_weight_zero_through_a_job():
    with run_emulator(MIXED) as emu, Worker(emu, kinds=["alb"], drain_seconds=5) as w:
        result = w.handle(interruption("i-spot1"))
        assert result.outcome == "deferred", result.error
        assert servers(emu, "alb", "sgp-alb1")[("i-spot1", 8080)] == 0
        assert [a.action for a in result.actions] == ["UpdateServerGroupServersAttribute"]


def test_a_wave_is_coalesced_into_few_calls_per_group():
    groups = [{"id": f"sgp-w{g}", "servers": [{"server_id": f"i-w{g}-{n}", "port": 80} for n in range(30)]
               + [{"server_id": "i-stay", "port": 80}]} for g in range(3)]
    with run_emulator(fleet(alb=groups[:2], nlb=groups[2:])) as emu, Worker(emu, coalesce_ms=300) as w:
        futures = [w.start(interruption(f"i-w{g}-{n}")) for g in range(3) for n in range(30)]
        outcomes = [f.result(60).outcome for f in futures]
        assert outcomes.count("handled") == 90
        assert servers(emu, "alb", "sgp-w0") == {("i-stay", 80): 100}
        assert servers(emu, "nlb", "sgp-w2") == {("i-stay", 80): 100}
        removes = calls(emu, "alb:RemoveServersFromServerGroup") + calls(emu, "nlb:RemoveServersFromServerGroup")
        assert removes <= 6, emu.state()["calls"]  # 90 events, 3 groups: one or two calls each


def test_a_server_group_takes_up_to_200_servers_a_call_not_clb_s_20():
    group = {"id": "sgp-big", "servers": [{"server_id": f"i-b{n}", "port": 80} for n in range(100)]}
    with run_emulator(fleet(alb=[group])) as emu, Worker(emu, coalesce_ms=500, kinds=["alb"]) as w:
        futures = [w.start(interruption(f"i-b{n}")) for n in range(100)]
        assert [f.result(60).outcome for f in futures].count("handled") == 100
        assert servers(emu, "alb", "sgp-big") == {}
        assert calls(emu, "alb:RemoveServersFromServerGroup") <= 2  # 100 servers: CLB's 20 would need 5


def test_a_server_gone_since_discovery_is_not_an_error():
    with run_emulator(MIXED) as emu, Worker(emu, kinds=["alb"], discovery_ttl=60) as w:
        assert w.handle(interruption("i-spot1")).outcome == "handled"  # the groups are cached now
        from aliyunsdkalb.request.v20200616.RemoveServersFromServerGroupRequest import (
            RemoveServersFromServerGroupRequest)

        req = RemoveServersFromServerGroupRequest()  # someone else takes i-keep1 out meanwhile
        req.set_ServerGroupId("sgp-alb2")
        req.set_Servers([{"ServerId": "i-keep1", "ServerType": "Ecs", "Port": "80"}])
        req.set_endpoint(emu.endpoint)
        acs_client(emu, auto_retry=False).do_action_with_exception(req)
        time.sleep(0.3)  # its job ends

        result = w.handle(interruption("i-keep1"))
        assert result.outcome == "handled", result.error
        details = {a.target: a.detail for a in result.actions}
        assert details["alb:sgp-alb2/i-keep1:80"] == "already removed"  # refused, re-read, nothing left
        assert servers(emu, "alb", "sgp-alb1") == {}
