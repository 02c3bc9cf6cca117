"""The emulator's RebootInstance, scheduled O&M events and their transitions, and the state
keys of ALB/NLB server groups — through the real SDKs."""
from __future__ import annotations

import time

import pytest

from ecs_worker.cloud import CloudClient, CloudError
from ecs_worker.config import parse_config
from ecs_worker.emulator import StateError, validate
from ecs_worker.testing import published_events, run_emulator

KEY = {"access_key_id": "LTAIevtest0001", "access_key_secret": "ev-test-secret-0001"}


def state(**extra):
    base = {"region": "cn-hangzhou", "account_id": "1690000000000000", "credentials": [KEY],
            "start_delay_seconds": 0.3, "stop_delay_seconds": 0.3,
            "instances": [{"id": "i-m1", "status": "Running", "scheduled_events": [
                {"event_id": "e-m1", "event_type": "SystemMaintenance.Reboot", "not_before": "2099-01-01T00:00:00Z"}]},
                {"id": "i-off", "status": "Stopped"}]}
    base.update(extra)
    return base


def cloud_for(emu):
    cfg = parse_config({"cloud": {"region": emu.region, "endpoint": emu.endpoint, "protocol": "http",
                                  "max_retries": 0},
                        "credentials": {"access_key_id": KEY["access_key_id"],
                                        "access_key_secret": KEY["access_key_secret"]}})
    return CloudClient.from_config(cfg)


def status(emu, iid):
    return next(i for i in emu.state()["instances"] if i["id"] == iid)


def events_of(cloud, iid, *statuses):
    params = {"InstanceId": iid, **{f"InstanceEventCycleStatus.{n}": s for n, s in enumerate(statuses, 1)}}
    doc = cloud.ecs("DescribeInstanceHistoryEvents", **params)
    return [(e["EventId"], e["EventCycleStatus"]["Name"])
            for e in doc["InstanceSystemEventSet"]["InstanceSystemEventType"]]


def test_reboot_dry_run_and_wrong_status():
    with run_emulator(state()) as emu:
        cloud = cloud_for(emu)
        with pytest.raises(CloudError) as dry:
            cloud.ecs("RebootInstance", InstanceId="i-m1", DryRun=True)
        assert dry.value.code == "DryRunOperation"
        assert status(emu, "i-m1")["status"] == "Running"
        assert status(emu, "i-m1")["scheduled_events"][0]["status"] == "Scheduled"
        with pytest.raises(CloudError) as stopped:
            cloud.ecs("RebootInstance", InstanceId="i-off")
        assert stopped.value.code == "IncorrectInstanceStatus"


def test_owner_reboot_goes_through_starting_and_avoids_the_event():
    with run_emulator(state()) as emu:
        cloud = cloud_for(emu)
        published = published_events(emu)
        assert events_of(cloud, "i-m1") == []  # by default only non-active events are listed
        assert events_of(cloud, "i-m1", "Scheduled") == [("e-m1", "Scheduled")]
        cloud.ecs("RebootInstance", InstanceId="i-m1")
        assert status(emu, "i-m1")["status"] == "Starting"  # documented: "changes to Starting"
        time.sleep(0.4)
        assert status(emu, "i-m1")["status"] == "Starting"
        time.sleep(0.4)
        assert status(emu, "i-m1")["status"] == "Running"
        assert events_of(cloud, "i-m1") == [("e-m1", "Avoided")]
        # The reboot's own state changes are published too, as the real fleet's are.
        assert [(e["name"], e["content"].get("state")) for e in published
                if e["name"] == "Instance:StateChange"] == [("Instance:StateChange", "Starting"),
                                                            ("Instance:StateChange", "Running")]
        published = [e for e in published if e["name"] != "Instance:StateChange"]
        assert [(e["name"], e["content"]["eventId"], e["content"]["eventStatus"]) for e in published] == [
            ("Instance:SystemMaintenance.Reboot:Avoided", "e-m1", "Avoided")]
        assert published[0]["content"]["notBefore"] == "2099-01-01T00:00:00Z"


def test_scheduled_event_announced_then_executed_at_not_before():
    with run_emulator(state()) as emu:
        cloud = cloud_for(emu)
        published = published_events(emu)
        event_id = emu.schedule_event("i-m1", not_before=time.time() + 0.5)
        names = [e["name"] for e in published]
        assert names == ["Instance:SystemMaintenance.Reboot:Scheduled"]
        time.sleep(0.6)
        assert (event_id, "Executed") in events_of(cloud, "i-m1")
        assert status(emu, "i-m1")["status"] in ("Stopping", "Starting")  # the platform rebooted it
        assert [e["name"] for e in published if e["name"] != "Instance:StateChange"][-1] == \
            "Instance:SystemMaintenance.Reboot:Executed"


def test_server_groups_show_in_the_state_with_the_state_file_names():
    groups = [{"id": "sgp-1", "load_balancer_id": "alb-1", "servers": [{"server_id": "i-m1", "port": 80}]}]
    with run_emulator(state(alb_server_groups=groups, nlb_server_groups=[{"id": "sgp-n"}])) as emu:
        doc = emu.get("/_emulator/state")
        assert doc["alb_server_groups"] == [{"id": "sgp-1", "load_balancer_id": "alb-1", "servers": [
            {"server_id": "i-m1", "port": 80, "weight": 100, "type": "ecs"}]}]
        assert doc["nlb_server_groups"] == [{"id": "sgp-n", "servers": []}]


@pytest.mark.parametrize("bad, where", [
    ({"alb_server_groups": [{"id": "sgp-1", "servers": [{"server_id": "i-1", "port": 0}]}]},
     "alb_server_groups[0].servers[0].port"),
    ({"nlb_server_groups": [{"id": "sgp-1"}, {"id": "sgp-1"}]}, "nlb_server_groups[1].id"),
    ({"instances": [{"id": "i-1", "status": "Running", "scheduled_events": [
        {"event_id": "e", "event_type": "SystemMaintenance.Reboot", "not_before": "soon"}]}]},
     "instances[0].scheduled_events[0].not_before"),
])
def test_state_validation_names_the_key(bad, where):
    with pytest.raises(StateError) as exc:
        validate(state(**bad))
    assert where in str(exc.value)


def test_redeploy_answers_a_task_and_avoids_a_scheduled_redeploy():
    s = state()
    s["instances"][0]["scheduled_events"][0]["event_type"] = "SystemMaintenance.Redeploy"
    with run_emulator(s) as emu:
        cloud = cloud_for(emu)
        assert cloud.ecs("RedeployInstance", InstanceId="i-m1")["TaskId"]
        assert status(emu, "i-m1")["status"] == "Stopping"
        assert events_of(cloud, "i-m1") == [("e-m1", "Avoided")]
        cloud.ecs("RedeployInstance", InstanceId="i-off")  # a Stopped instance starts on its new host
        assert status(emu, "i-off")["status"] == "Starting"
        time.sleep(0.8)
        assert status(emu, "i-m1")["status"] == "Running" and status(emu, "i-off")["status"] == "Running"


def test_server_groups_refuse_removing_what_is_not_there_and_adding_what_is():
    groups = [{"id": "sgp-1", "servers": [{"server_id": "i-m1", "port": 80}]}]
    with run_emulator(state(alb_server_groups=groups, job_delay_seconds=0)) as emu:
        cloud = cloud_for(emu)
        with pytest.raises(CloudError) as absent:
            cloud.alb("RemoveServersFromServerGroup", ServerGroupId="sgp-1",
                      Servers=[{"ServerId": "i-m1", "ServerType": "Ecs", "Port": 81}])
        assert absent.value.code == "ResourceNotFound.BackendServer"
        with pytest.raises(CloudError) as present:
            cloud.alb("AddServersToServerGroup", ServerGroupId="sgp-1",
                      Servers=[{"ServerId": "i-m1", "ServerType": "Ecs", "Port": 80, "Weight": 100}])
        assert present.value.code == "ResourceAlreadyAssociated.BackendServer"
        with pytest.raises(CloudError) as too_many:
            cloud.alb("AddServersToServerGroup", ServerGroupId="sgp-1",
                      Servers=[{"ServerId": f"i-{n}", "ServerType": "Ecs", "Port": 80} for n in range(201)])
        assert too_many.value.code == "QuotaExceeded.ServersNum"
