"""The `maintenance` plugin against the emulator with the real SDKs: the whole sequence
(record, remove from CLB/ALB/NLB, reboot, wait, restore exactly), windows, opt-in,
dry-run and replay plans, and faults in the middle of the sequence."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from ecs_worker import RESUME_STATE
from ecs_worker.events.event import parse_event
from ecs_worker.plugins import maintenance as plugin
from ecs_worker.testing import Harness, published_events, run_emulator

REGION = "cn-hangzhou"
KEY = {"access_key_id": "LTAImttest0001", "access_key_secret": "mt-test-secret-0001"}
OPT_IN = {"ecs-worker:maintenance": "auto"}
IID = "i-maint1"


def world(not_before: float, tags=OPT_IN, status="Running", event_type="SystemMaintenance.Reboot"):
    nb = datetime.fromtimestamp(not_before, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"region": REGION, "account_id": "1690000000000000", "credentials": [KEY],
            "start_delay_seconds": 0.3, "stop_delay_seconds": 0.3, "job_delay_seconds": 0.1,
            "instances": [{"id": IID, "status": status, "tags": dict(tags), "scheduled_events": [
                {"event_id": "e-maint1", "event_type": event_type, "not_before": nb}]},
                {"id": "i-other", "status": "Running"}],
            "load_balancers": [{"id": "lb-1", "vserver_groups": [{"id": "rsp-web80", "backend_servers": [
                {"server_id": IID, "port": 80, "weight": 70}, {"server_id": "i-other", "port": 80}]}]}],
            "alb_server_groups": [{"id": "sgp-alb", "servers": [
                {"server_id": IID, "port": 8080, "weight": 50}, {"server_id": IID, "port": 8081, "weight": 0}]}],
            "nlb_server_groups": [{"id": "sgp-nlb", "servers": [{"server_id": IID, "port": 443, "type": "eni"}]}]}


def scheduled(not_before: float, status="Scheduled", event_id="evt-1", event_type="SystemMaintenance.Reboot"):
    nb = datetime.fromtimestamp(not_before, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return parse_event(json.dumps({
        "ver": "1.0", "id": event_id, "product": "ECS", "level": "CRITICAL", "regionId": REGION,
        "name": f"Instance:{event_type}:{status}",
        "resourceId": f"acs:ecs:{REGION}:1690000000000000:instance/{IID}",
        "content": {"eventId": "e-maint1", "eventType": event_type, "eventStatus": status,
                    "notBefore": nb, "instanceId": IID}}))


class Worker(Harness):
    """The sequence on its own: the load-balancer guard, which would keep this world's
    single-member ALB/NLB groups in, is off here (tests/test_lb_guard.py has it on)."""

    def __init__(self, emu, dry_run=False, **cfg):
        super().__init__(plugin.MaintenancePlugin(), config={"poll_seconds": 1, **cfg}, dry_run=dry_run, emulator=emu,
                         call_timeout=30, settings={"guard": {"keep_healthy": 0}})

    def run_through(self, event, resume=None, rounds=20, on_defer=None):
        """Dispatch, and on each deferral dispatch again (sleeping at most 1 s) with the
        resume mapping the worker would store: what the queue does, compressed."""
        results = []
        for _ in range(rounds):
            result = self.dispatch(event, resume)
            results.append(result)
            if result.outcome != "deferred":
                return results
            if on_defer:
                on_defer(result)
            time.sleep(min(result.defer_seconds or 0, 1.0))
            resume = result.resume(resume)
        raise AssertionError("still deferred")


def memberships(emu):
    s = emu.state()
    clb = {(b["server_id"], b["port"]): b["weight"]
           for b in s["load_balancers"][0]["vserver_groups"][0]["backend_servers"]}
    alb = {(x["server_id"], x["port"]): x["weight"] for x in s["alb_server_groups"][0]["servers"]}
    nlb = {(x["server_id"], x["port"]): (x["weight"], x["type"]) for x in s["nlb_server_groups"][0]["servers"]}
    return clb, alb, nlb


BEFORE = ({(IID, 80): 70, ("i-other", 80): 100}, {(IID, 8080): 50, (IID, 8081): 0}, {(IID, 443): (100, "eni")})


def instance(emu, iid=IID):
    return next(i for i in emu.state()["instances"] if i["id"] == iid)


def test_reboots_before_the_platform_out_of_every_group_and_back_exactly():
    nb = time.time() + 3 * 3600
    with run_emulator(world(nb)) as emu, Worker(emu) as w:
        assert memberships(emu) == BEFORE
        published = published_events(emu)
        seen_out = []

        def check(result):  # while rebooting, out of every group
            if (result.resume().get(RESUME_STATE) or {}).get("maintenance", {}).get("step") == "rebooting":
                clb, alb, nlb = memberships(emu)
                seen_out.append((set(clb), alb, nlb, instance(emu)["status"]))

        results = w.run_through(scheduled(nb), on_defer=check)

        final = results[-1]
        assert final.outcome == "handled", final.error
        assert "back in 3 group(s)" in final.plugins["maintenance"].detail
        assert memberships(emu) == BEFORE  # ports, weights (0 too) and types as they were
        assert seen_out and seen_out[0][:3] == ({("i-other", 80)}, {}, {})
        assert seen_out[0][3] in ("Stopping", "Starting")
        assert instance(emu)["scheduled_events"][0]["status"] == "Avoided"
        assert [e["name"] for e in published if e["name"] != "Instance:StateChange"] == [
            "Instance:SystemMaintenance.Reboot:Avoided"]
        acts = [(a.action, a.target) for r in results for a in r.actions]
        assert acts[:4] == [("RemoveVServerGroupBackendServers", f"rsp-web80/{IID}:80"),
                            ("RemoveServersFromServerGroup", f"alb:sgp-alb/{IID}:8080"),
                            ("RemoveServersFromServerGroup", f"alb:sgp-alb/{IID}:8081"),
                            ("RemoveServersFromServerGroup", f"nlb:sgp-nlb/{IID}:443")]
        assert acts[4] == ("RebootInstance", IID)
        assert {a for a, _ in acts[5:]} == {"AddVServerGroupBackendServers", "AddServersToServerGroup"}
        assert all(a.result == "ok" for r in results for a in r.actions)


def test_a_scheduled_redeploy_is_redeployed_when_asked_for_and_ignored_otherwise():
    nb = time.time() + 3600
    redeploy = "SystemMaintenance.Redeploy"
    with run_emulator(world(nb, event_type=redeploy)) as emu, Worker(emu) as w:
        assert w.run_through(scheduled(nb, event_type=redeploy))[-1].outcome == "ignored"  # not in event_types
    with run_emulator(world(nb, event_type=redeploy)) as emu, Worker(emu, event_types=[redeploy]) as w:
        results = w.run_through(scheduled(nb, event_type=redeploy))
        assert results[-1].outcome == "handled", results[-1].error
        assert "redeployed" in results[-1].plugins["maintenance"].detail
        assert ("RedeployInstance", IID) in [(a.action, a.target) for r in results for a in r.actions]
        assert instance(emu)["scheduled_events"][0]["status"] == "Avoided"
        assert memberships(emu) == BEFORE


@pytest.mark.parametrize("tags, status, event_status", [
    ({}, "Running", "Scheduled"),             # not opted in
    (OPT_IN, "Stopped", "Scheduled"),         # nothing to reboot
    (OPT_IN, "Running", "Avoided"),           # a later notification of the same event
    (OPT_IN, "Running", "Executed"),
])
def test_leaves_alone_what_is_not_its_to_reboot(tags, status, event_status):
    nb = time.time() + 3600
    with run_emulator(world(nb, tags=tags, status=status)) as emu, Worker(emu) as w:
        results = w.run_through(scheduled(nb, status=event_status))
        assert results[-1].outcome == "ignored"
        assert memberships(emu) == BEFORE
        assert "ecs:RebootInstance" not in emu.state()["calls"]


def test_an_event_no_longer_scheduled_in_the_cloud_is_left_alone():
    nb = time.time() + 3600
    state = world(nb)
    state["instances"][0]["scheduled_events"][0]["status"] = "Canceled"
    with run_emulator(state) as emu, Worker(emu) as w:
        assert w.run_through(scheduled(nb))[-1].outcome == "ignored"
        assert memberships(emu) == BEFORE


def test_a_notice_whose_event_ecs_does_not_know_is_left_alone():
    """A forged (or stray) notice: its eventId is found in neither the active nor the
    history events, so nothing is taken out or rebooted."""
    nb = time.time() + 3600
    state = world(nb)
    state["instances"][0]["scheduled_events"] = []
    with run_emulator(state) as emu, Worker(emu) as w:
        assert w.run_through(scheduled(nb))[-1].outcome == "ignored"
        assert memberships(emu) == BEFORE
        assert "ecs:RebootInstance" not in emu.state()["calls"]


def test_waits_for_the_window_by_deferring():
    nb = time.time() + 3 * 86400
    with run_emulator(world(nb)) as emu, Worker(emu, window="02:00-05:00", timezone="Asia/Shanghai") as w:
        result = w.dispatch(scheduled(nb))
        assert result.outcome == "deferred"
        assert 1 <= result.defer_seconds <= 43200  # one deferral at most 12 h; re-computed on return
        assert result.resume()[RESUME_STATE]["maintenance"]["step"] == "wait"
        act_at = datetime.fromtimestamp(result.resume()[RESUME_STATE]["maintenance"]["act_at"],
                                        ZoneInfo("Asia/Shanghai"))
        assert 2 <= act_at.hour < 5 or (act_at.hour, act_at.minute) == (5, 0)
        assert memberships(emu) == BEFORE


UTC = timezone.utc


def _at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("now, not_before, window, expect, note", [
    ("2026-11-28 10:00", "2026-11-30 10:00", "02:00-05:00", "2026-11-29 02:00", False),
    ("2026-11-28 03:00", "2026-11-30 10:00", "02:00-05:00", "2026-11-28 03:00", False),  # inside one now
    ("2026-11-28 10:00", "2026-11-30 10:00", "22:00-01:00", "2026-11-28 22:00", False),  # crosses midnight
    ("2026-11-28 10:00", "2026-11-29 02:20", "02:00-05:00", "2026-11-29 01:50", True),   # none fits: margin
    ("2026-11-28 10:00", "2026-11-28 16:00", "02:00-05:00", "2026-11-28 15:30", True),   # margin then
    ("2026-11-28 15:45", "2026-11-28 16:00", "now", "2026-11-28 15:45", True),           # late notice
    ("2026-11-28 10:00", "2026-11-30 10:00", "now", "2026-11-28 10:00", False),
])
def test_plan_time(now, not_before, window, expect, note):
    when, why = plugin.plan_time(_at(now).timestamp(), _at(not_before), window, UTC, 1800)
    assert datetime.fromtimestamp(when, UTC) == _at(expect)
    assert bool(why) == note


@pytest.mark.parametrize("bad", [{"window": "2-5"}, {"timezone": "Mars/Olympus"},
                                 {"event_types": ["Disk:Stalled"]}, {"kinds": ["elb"]}])
def test_bad_config_fails_at_startup(bad):
    with run_emulator(world(time.time() + 3600)) as emu:
        with pytest.raises(Exception) as exc:
            Worker(emu, **bad)
        assert next(iter(bad)) in str(exc.value)


def test_dry_run_replay_shows_the_whole_plan_and_changes_nothing():
    nb = time.time() + 3 * 86400
    with run_emulator(world(nb)) as emu, Worker(emu, dry_run=True, window="02:00-05:00", drain_seconds=30) as w:
        result = w.replay(scheduled(nb))
        assert result.outcome == "handled", result.error
        plan = [(a.action, a.result) for a in result.actions]
        assert plan == [("SetVServerGroupAttribute", "planned"),
                        ("UpdateServerGroupServersAttribute", "planned"),
                        ("UpdateServerGroupServersAttribute", "planned"),
                        ("UpdateServerGroupServersAttribute", "planned"),
                        ("RemoveVServerGroupBackendServers", "planned"),
                        ("RemoveServersFromServerGroup", "planned"),
                        ("RemoveServersFromServerGroup", "planned"),
                        ("RemoveServersFromServerGroup", "planned"),
                        ("RebootInstance", "planned"),
                        ("AddVServerGroupBackendServers", "planned"),
                        ("AddServersToServerGroup", "planned"),
                        ("AddServersToServerGroup", "planned"),
                        ("AddServersToServerGroup", "planned")]
        assert memberships(emu) == BEFORE
        assert instance(emu)["status"] == "Running"
        assert instance(emu)["scheduled_events"][0]["status"] == "Scheduled"


def test_drain_sets_weight_zero_first_then_restores_the_recorded_weights():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu, drain_seconds=1) as w:
        first = w.dispatch(scheduled(nb))
        assert first.outcome == "deferred"
        clb, alb, nlb = memberships(emu)
        assert clb[(IID, 80)] == 0 and alb[(IID, 8080)] == 0 and nlb[(IID, 443)][0] == 0
        results = w.run_through(scheduled(nb), resume=first.resume())
        assert results[-1].outcome == "handled", results[-1].error
        assert memberships(emu) == BEFORE


def test_reboot_refused_after_removal_puts_it_back_and_fails_loudly():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu) as w:
        first = w.dispatch(scheduled(nb))  # memberships recorded
        with emu.world.lock:
            emu.world.cloud.instances[IID]["locks"].append("Security")  # RebootInstance will refuse
        second = w.dispatch(scheduled(nb), first.resume())
        assert second.outcome == "failed"
        assert "InstanceLockedForSecurity" in second.error and "back in 3 group(s)" in second.error
        assert memberships(emu) == BEFORE
        assert RESUME_STATE not in second.resume()  # nothing owed: a later attempt starts afresh


def test_restore_failing_names_every_group_it_is_out_of_and_the_retry_finishes_it():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu) as w:
        resume, result = None, None
        for _ in range(5):  # up to the reboot
            result = w.dispatch(scheduled(nb), resume)
            resume = result.resume(resume)
            if resume[RESUME_STATE]["maintenance"]["step"] == "rebooting":
                break
        time.sleep(0.8)  # Running again
        emu.set_faults({"alb": {"error_rate": 1.0, "error_code": "InternalError"}})
        failed = w.dispatch(scheduled(nb), resume)
        assert failed.outcome == "failed"
        assert failed.error.startswith(f"maintenance: RuntimeError: {IID} OUT of service in alb:sgp-alb/{IID}:8080 "
                                       "(weight 50), alb:sgp-alb/")
        assert "rsp-web80" not in failed.error  # CLB went back
        assert failed.resume(resume)[RESUME_STATE]["maintenance"]["step"] == "restore"
        assert memberships(emu)[1] == {}  # ALB still out: the failure says so, and it comes back

        emu.set_faults({"alb": {}})
        done = w.dispatch(scheduled(nb), failed.resume(resume))
        assert done.outcome == "handled", done.error
        assert memberships(emu) == BEFORE


def test_a_worker_dying_mid_step_resumes_from_the_last_settled_state_without_a_second_reboot():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu) as w:
        recorded = w.dispatch(scheduled(nb))  # settled: the memberships travel with the message
        lost = w.dispatch(scheduled(nb), recorded.resume())  # removed + rebooted, then the worker dies
        assert lost.outcome == "deferred" and memberships(emu)[1] == {}
        # The message returns with the last settled state (memberships recorded, nothing done):
        results = w.run_through(scheduled(nb), resume=recorded.resume())
        assert results[-1].outcome == "handled", results[-1].error
        assert memberships(emu) == BEFORE
        assert emu.state()["calls"]["ecs:RebootInstance"] == 1  # a reboot under way is not repeated
        assert all(a.result == "ok" for r in results for a in r.actions)  # removing again: nothing there


def test_a_removal_failing_half_way_puts_back_what_was_taken_out():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu) as w:
        first = w.dispatch(scheduled(nb))  # memberships recorded, nothing changed yet
        emu.set_faults({"nlb": {"error_rate": 1.0, "error_code": "Forbidden.RAM", "error_status": 403}})
        second = w.dispatch(scheduled(nb), first.resume())  # CLB and ALB go out; NLB fails
        assert second.outcome == "failed"
        assert f"{IID} OUT of service in nlb:sgp-nlb/{IID}:443 (weight 100): maintenance of {IID} failed " \
               "(Forbidden.RAM" in second.error
        assert "putting it back failed (Forbidden.RAM)" in second.error  # NLB cannot even be read back
        assert "rsp-web80" not in second.error and "sgp-alb" not in second.error  # those are back
        clb, alb, _ = memberships(emu)
        assert (clb, alb) == BEFORE[:2]  # the groups that answer are back already
        assert "ecs:RebootInstance" not in emu.state()["calls"]

        emu.set_faults({"nlb": {}})
        done = w.dispatch(scheduled(nb), second.resume(first.resume()))
        assert done.outcome == "handled", done.error  # the retry finishes the restore
        assert memberships(emu) == BEFORE


def test_instance_not_running_again_in_time_fails_naming_the_groups():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu, reboot_timeout=30) as w:
        resume = None
        for _ in range(5):
            result = w.dispatch(scheduled(nb), resume)
            resume = result.resume(resume)
            if resume[RESUME_STATE]["maintenance"]["step"] == "rebooting":
                break
        resume[RESUME_STATE]["maintenance"]["rebooted_at"] -= 60  # as if a minute went by
        with emu.world.lock:
            inst = emu.world.cloud.instances[IID]
            inst["status"], inst["due"] = "Stopped", None  # it never came back
        failed = w.dispatch(scheduled(nb), resume)
        assert failed.outcome == "failed"
        assert "Stopped, not Running" in failed.error and f"OUT of service in rsp-web80/{IID}:80" in failed.error
        assert failed.resume(resume)[RESUME_STATE]["maintenance"]["step"] == "rebooting"
        assert memberships(emu)[0] == {("i-other", 80): 100}  # not put back while it is down


def test_a_failed_read_before_anything_changed_is_an_ordinary_retry():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu) as w:
        emu.set_faults({"ecs": {"error_rate": 1.0, "error_code": "Forbidden.RAM", "error_status": 403}})
        result = w.dispatch(scheduled(nb))
        assert result.outcome == "failed" and "Forbidden.RAM" in result.error
        assert memberships(emu) == BEFORE
        assert result.resume() == {"maintenance": None}


def test_dry_run_without_the_cloud_still_shows_the_plan_marked_unverified(monkeypatch):
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_CREDENTIALS_FILE",
                 "ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no credentials file either
    with Harness(plugin.MaintenancePlugin(), config={"kinds": ["clb", "alb"]}, dry_run=True,
                 settings={"cloud": {"max_retries": 0}}) as h:
        result = h.replay(scheduled(time.time() + 3600))
    assert result.outcome == "handled", result.error
    assert [(a.action, a.target, a.result) for a in result.actions] == [
        ("RemoveVServerGroupBackendServers", f"?/{IID}", "planned"),
        ("RemoveServersFromServerGroup", f"alb:?/{IID}", "planned"),
        ("RebootInstance", IID, "planned"),
        ("AddVServerGroupBackendServers", f"?/{IID}", "planned"),
        ("AddServersToServerGroup", f"alb:?/{IID}", "planned")]
    assert all(a.detail.startswith("unverified: could not read ECS") for a in result.actions)
