"""The load-balancer guard with the maintenance plugin, against the emulator (real SDKs) and
a real store: maintenance scheduled for every member of one group never takes the last
healthy one out — by one worker, and by two workers sharing a store (SQLite state_dir,
Redis) — it waits instead; at notBefore it says so and leaves the instance in; an unhealthy
member does not count (CLB, and ALB/NLB by their listeners' health checks); a spot removal is
never held back but counts, also against a reservation granted before it (judged again at the
moment of removal); a sequence that ends unacted releases its reservation at once."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

import pytest

from ecs_worker.events.event import parse_event
from ecs_worker.plugins import maintenance, slb
from ecs_worker.testing import Harness, run_emulator
from redis_kit import fleet_name

REGION = "cn-hangzhou"
KEY = {"access_key_id": "LTAIguard0001", "access_key_secret": "guard-test-secret-0001"}
MEMBERS = ("i-guard1", "i-guard2", "i-guard3")


def world(not_before: float, health=None):
    nb = _iso(not_before)
    return {"region": REGION, "account_id": "1690000000000000", "credentials": [KEY],
            "start_delay_seconds": 0.2, "stop_delay_seconds": 0.2,
            "instances": [{"id": i, "status": "Running", "tags": {"ecs-worker:maintenance": "auto"},
                           "scheduled_events": [{"event_id": f"e-{i}", "event_type": "SystemMaintenance.Reboot",
                                                 "not_before": nb}]} for i in MEMBERS],
            "load_balancers": [{"id": "lb-1", "vserver_groups": [{"id": "rsp-web80", "backend_servers": [
                {"server_id": i, "port": 80, "health": (health or {}).get(i, "normal")} for i in MEMBERS[:2]]}]}]}


def scheduled(iid: str, not_before: float):
    return parse_event(json.dumps({
        "ver": "1.0", "id": f"evt-{iid}", "product": "ECS", "level": "CRITICAL", "regionId": REGION,
        "name": "Instance:SystemMaintenance.Reboot:Scheduled",
        "resourceId": f"acs:ecs:{REGION}:1690000000000000:instance/{iid}",
        "content": {"eventId": f"e-{iid}", "eventType": "SystemMaintenance.Reboot", "eventStatus": "Scheduled",
                    "notBefore": _iso(not_before), "instanceId": iid}}))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def in_group(emu) -> set[str]:
    return {b["server_id"] for b in emu.state()["load_balancers"][0]["vserver_groups"][0]["backend_servers"]}


class Worker(Harness):
    def __init__(self, emu, worker: dict, **cfg):
        super().__init__(maintenance.MaintenancePlugin(), config={"poll_seconds": 1, "kinds": ["clb"], **cfg},
                         dry_run=False, emulator=emu, call_timeout=30, settings={"worker": worker})


@pytest.fixture(params=["one worker", "two workers, one state_dir", "two workers, one Redis"])
def workers(request, tmp_path):
    """Two handles on the maintenance plugin: the same worker twice, or two workers sharing a store."""
    if request.param == "one worker":
        return lambda emu: [Worker(emu, {"state_dir": str(tmp_path / "w")})] * 2
    if request.param == "two workers, one state_dir":
        return lambda emu: [Worker(emu, {"state_dir": str(tmp_path / "shared")}) for _ in range(2)]
    server = request.getfixturevalue("redis_server")
    shared = {"store": server.url, "store_fleet": fleet_name()}
    return lambda emu: [Worker(emu, {"state_dir": str(tmp_path / f"w{n}"), **shared}) for n in range(2)]


def test_maintenance_on_every_member_never_takes_the_last_one_out(workers):
    nb = time.time() + 3 * 3600
    with run_emulator(world(nb)) as emu:
        w1, w2 = workers(emu)
        try:
            seen, resumes, done = [], {}, {}
            for _ in range(40):  # each worker, in turn, takes its event one step further
                for w, iid in ((w1, MEMBERS[0]), (w2, MEMBERS[1])):
                    if iid in done:
                        continue
                    result = w.dispatch(scheduled(iid, nb), resumes.get(iid))
                    seen.append(in_group(emu))
                    if result.outcome == "deferred":
                        resumes[iid] = result.resume(resumes.get(iid))
                    else:
                        done[iid] = result
                if len(done) == 2:
                    break
                time.sleep(0.3)
        finally:
            for w in {id(w): w for w in (w1, w2)}.values():
                w.close()
    assert {i: r.outcome for i, r in done.items()} == {MEMBERS[0]: "handled", MEMBERS[1]: "handled"}
    assert all(seen), "the group was emptied"
    assert {MEMBERS[0]} in seen and {MEMBERS[1]} in seen  # each was out, one at a time
    assert in_group(emu) == set(MEMBERS[:2])
    rebooted = [i for i in emu.state()["instances"] if i["scheduled_events"][0]["status"] == "Avoided"]
    assert len(rebooted) == 2


def test_at_not_before_a_held_back_removal_is_an_error_and_the_instance_stays_in(tmp_path, caplog):
    nb = time.time() + 3 * 3600
    with run_emulator(world(nb, health={MEMBERS[1]: "abnormal"})) as emu, \
            Worker(emu, {"state_dir": str(tmp_path)}) as w:
        # Its partner fails its health check: taking i-guard1 out would leave none healthy.
        waiting = w.dispatch(scheduled(MEMBERS[0], nb))
        assert waiting.outcome == "deferred" and "too few healthy members" in waiting.plugins["maintenance"].detail
        assert in_group(emu) == set(MEMBERS[:2])
        with caplog.at_level(logging.ERROR):  # notBefore comes while it still waits
            late = w.dispatch(scheduled(MEMBERS[0], time.time() - 1), waiting.resume())
        assert late.outcome == "failed" and "not taken out of service before notBefore" in late.error
        assert any("NOT removing it" in r.getMessage() for r in caplog.records)
        assert in_group(emu) == set(MEMBERS[:2])
        assert emu.state()["calls"].get("ecs:RebootInstance", 0) == 0


def test_a_spot_removal_is_never_held_back_but_counts(tmp_path):
    nb = time.time() + 3 * 3600
    state = world(nb)
    state["instances"][1]["spot"] = True  # the slb plugin removes only what ECS says is a spot instance
    with run_emulator(state) as emu:
        settings = {"worker": {"state_dir": str(tmp_path)}}
        with Harness(slb.SlbPlugin(), config={"coalesce_ms": 0}, dry_run=False, emulator=emu,
                     settings=settings) as spot, Worker(emu, {"state_dir": str(tmp_path)}) as w:
            # Maintenance holds i-guard1's reservation: i-guard2 is the last healthy member now.
            assert w.dispatch(scheduled(MEMBERS[0], nb)).outcome == "deferred"
            notice = parse_event(json.dumps({"id": "spot-1", "name": "Instance:PreemptibleInstanceInterruption",
                                             "regionId": REGION, "content": {"instanceId": MEMBERS[1],
                                                                             "action": "delete"}}))
            removed = spot.start(notice).result(30)
            assert removed.outcome == "handled", removed.error  # the instance is going away: never held back
            assert MEMBERS[1] not in in_group(emu)
            out = {h for (h,) in w.runtime.store._run("SELECT holder FROM reservations WHERE grp = 'clb:rsp-web80'")}
            assert out == {MEMBERS[0], MEMBERS[1]}  # ...and it counts against the group


def test_a_resumed_step_refused_releases_its_reservation_at_once(tmp_path):
    nb = time.time() + 3 * 3600
    with run_emulator(world(nb)) as emu, Worker(emu, {"state_dir": str(tmp_path)}) as w:
        first = w.dispatch(scheduled(MEMBERS[0], nb))  # reserved, memberships recorded: removal next
        assert first.outcome == "deferred" and "recorded" in first.plugins["maintenance"].detail
        assert "too few healthy members" in w.dispatch(scheduled(MEMBERS[1], nb)).plugins["maintenance"].detail
        with emu.world.lock:  # the operator opts i-guard1 out meanwhile: its sequence ends unacted
            del emu.world.cloud.instances[MEMBERS[0]]["tags"]["ecs-worker:maintenance"]
        ended = w.dispatch(scheduled(MEMBERS[0], nb), first.resume())
        assert ended.outcome == "ignored" and "not acting on the resumed" in ended.plugins["maintenance"].detail
        # ...and so does its reservation: i-guard2 may go now, not [guard] hold_seconds later.
        second = w.dispatch(scheduled(MEMBERS[1], nb))
        assert second.outcome == "deferred" and "recorded" in second.plugins["maintenance"].detail
        assert in_group(emu) == set(MEMBERS[:2])


@pytest.mark.parametrize("kind", ["alb", "nlb"])
@pytest.mark.parametrize("check, partner, held", [(True, "Unhealthy", True), (True, "Initial", True),
                                                  (True, "Healthy", False), (False, "Unhealthy", False)])
def test_an_alb_or_nlb_member_failing_its_listener_health_check_is_not_healthy(tmp_path, kind, check, partner, held):
    nb = time.time() + 3 * 3600
    state = world(nb)
    state[f"{kind}_server_groups"] = [{"id": "sgp-web", "load_balancer_id": f"{kind}-1", "health_check": check,
                                       "servers": [{"server_id": MEMBERS[0], "port": 80},
                                                   {"server_id": MEMBERS[1], "port": 80, "health": partner}]}]
    with run_emulator(state) as emu, Worker(emu, {"state_dir": str(tmp_path)}, kinds=[kind]) as w:
        detail = w.dispatch(scheduled(MEMBERS[0], nb)).plugins["maintenance"].detail
        # The partner failing (or not yet passing) the check leaves none healthy: the removal waits.
        # With the check off there is no verdict (Unavailable): the partner counts, as for CLB.
        assert ("too few healthy members" in detail) is held, detail
        assert emu.state()["calls"].get(f"{kind}:GetListenerHealthStatus") == 1
        if not held:  # a second event reads which listener serves the group from the plugin's cache
            w.dispatch(scheduled(MEMBERS[1], nb))
            assert emu.state()["calls"].get(f"{kind}:ListListeners") == 1


def test_a_spot_loss_after_the_grant_holds_the_removal_back_at_the_moment_of_removal(tmp_path):
    nb = time.time() + 3 * 3600
    state = world(nb)
    state["instances"][1]["spot"] = True
    with run_emulator(state) as emu:
        settings = {"worker": {"state_dir": str(tmp_path)}}
        with Harness(slb.SlbPlugin(), config={"coalesce_ms": 0}, dry_run=False, emulator=emu,
                     settings=settings) as spot, Worker(emu, {"state_dir": str(tmp_path)}, drain_seconds=1) as w:
            # Granted while i-guard2 was in and healthy: i-guard1 is drained, to go out next.
            first = w.dispatch(scheduled(MEMBERS[0], nb))
            assert first.outcome == "deferred" and "draining" in first.plugins["maintenance"].detail
            notice = parse_event(json.dumps({"id": "spot-2", "name": "Instance:PreemptibleInstanceInterruption",
                                             "regionId": REGION, "content": {"instanceId": MEMBERS[1],
                                                                             "action": "delete"}}))
            assert spot.start(notice).result(30).outcome == "handled"  # i-guard2 is reclaimed meanwhile
            # At the moment of removal the grant is judged again: i-guard1 is the last one serving.
            second = w.dispatch(scheduled(MEMBERS[0], nb), first.resume())
            assert second.outcome == "deferred" and "too few healthy members" in second.plugins["maintenance"].detail
            backends = emu.state()["load_balancers"][0]["vserver_groups"][0]["backend_servers"]
            assert [(b["server_id"], b["weight"]) for b in backends] == [(MEMBERS[0], 100)]  # in, weight back
            assert emu.state()["calls"].get("ecs:RebootInstance", 0) == 0
            out = {h for (h,) in w.runtime.store._run("SELECT holder FROM reservations WHERE grp = 'clb:rsp-web80'")}
            assert out == {MEMBERS[1]}  # nothing held for i-guard1 while it waits


def test_a_failed_step_releases_the_reservation_of_every_group_it_is_back_in(tmp_path):
    nb = time.time() + 3 * 3600
    state = world(nb)
    state["nlb_server_groups"] = [{"id": "sgp-web", "servers": [{"server_id": i, "port": 80} for i in MEMBERS[:2]]}]
    with run_emulator(state) as emu, Worker(emu, {"state_dir": str(tmp_path)}, kinds=["clb", "nlb"]) as w:
        first = w.dispatch(scheduled(MEMBERS[0], nb))  # reserved in both groups
        assert first.outcome == "deferred" and "recorded" in first.plugins["maintenance"].detail
        emu.set_faults({"nlb": {"error_rate": 1.0, "error_code": "Forbidden.NoPermission", "error_status": 403}})
        failed = w.dispatch(scheduled(MEMBERS[0], nb), first.resume())  # NLB cannot be read: the step fails
        assert failed.outcome == "failed" and "nlb:sgp-web" in failed.error
        held = {g: h for g, h in w.runtime.store._run("SELECT grp, holder FROM reservations")}
        assert held == {"nlb:sgp-web": MEMBERS[0]}  # back in the CLB group: that reservation ended now
