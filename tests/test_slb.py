"""The `slb` plugin against the emulator with the real SDKs: removal from every group and
port, idempotence, dry-run, draining, and a wave of 500 under SLB throttling."""
from __future__ import annotations

import json
import time
from concurrent.futures import wait

import pytest

from ecs_worker.events.event import parse_event
from ecs_worker.plugins import slb as slb_plugin
from ecs_worker.testing import Harness, run_emulator, with_spot_instances

REGION = "cn-hangzhou"
KEY = {"access_key_id": "LTAIslbtest0001", "access_key_secret": "slb-test-secret-0001"}


def fleet(load_balancers, instances=()):
    return with_spot_instances({"region": REGION, "account_id": "1690000000000000", "credentials": [KEY],
                                "instances": list(instances), "load_balancers": load_balancers})


TWO_GROUPS = fleet([
    {"id": "lb-web", "vserver_groups": [
        {"id": "rsp-web80", "backend_servers": [
            {"server_id": "i-spot1", "port": 80}, {"server_id": "i-spot1", "port": 8080},
            {"server_id": "i-keep1", "port": 80}]},
        {"id": "rsp-api443", "backend_servers": [
            {"server_id": "i-spot1", "port": 443}, {"server_id": "i-keep1", "port": 443}]},
    ]},
    {"id": "lb-other", "vserver_groups": [
        {"id": "rsp-other", "backend_servers": [{"server_id": "i-keep1", "port": 80}]}]},
])


def interruption(instance_id, n=0, when=None, action="delete"):
    stamp = time.strftime("%Y%m%dT%H%M%S.000+0000", time.gmtime(when or time.time()))
    return parse_event(json.dumps({
        "ver": "1.0", "id": f"evt-{instance_id}-{n}", "product": "ECS", "level": "WARN",
        "name": "Instance:PreemptibleInstanceInterruption", "regionId": REGION, "eventTime": stamp,
        "resourceId": f"acs:ecs:{REGION}:1690000000000000:instance/{instance_id}",
        "content": {"instanceId": instance_id, **({"action": action} if action is not None else {})}}))


class Worker(Harness):
    """The slb plugin alone, behind the real dispatcher, pointed at an emulator."""

    def __init__(self, emu, dry_run=False, cloud=None, **slb):
        super().__init__(slb_plugin.SlbPlugin(), config=slb, dry_run=dry_run, emulator=emu, call_timeout=10,
                         settings={"cloud": cloud or {}})

    def handle(self, event, resume=None, timeout=30):
        return self.start(event, resume).result(timeout)


def backends(emu, group_id):
    for lb in emu.state()["load_balancers"]:
        for g in lb["vserver_groups"]:
            if g["id"] == group_id:
                return {(s["server_id"], s["port"]): s["weight"] for s in g["backend_servers"]}
    raise KeyError(group_id)


def calls(emu, name):
    return emu.state()["calls"].get(name, 0)


@pytest.mark.parametrize("configured", [[], ["rsp-web80", "rsp-api443", "rsp-other"]],
                         ids=["discovered", "configured"])
def test_instance_in_two_groups_on_several_ports_is_removed_from_all(configured):
    with run_emulator(TWO_GROUPS) as emu, Worker(emu, vserver_groups=configured) as w:
        result = w.handle(interruption("i-spot1"))

        assert result.outcome == "handled", result.error
        assert backends(emu, "rsp-web80") == {("i-keep1", 80): 100}
        assert backends(emu, "rsp-api443") == {("i-keep1", 443): 100}
        assert backends(emu, "rsp-other") == {("i-keep1", 80): 100}
        assert calls(emu, "slb:RemoveVServerGroupBackendServers") == 2  # one per group, all ports at once
        assert sorted((a.action, a.target, a.result) for a in result.actions) == [
            ("RemoveVServerGroupBackendServers", "rsp-api443/i-spot1:443", "ok"),
            ("RemoveVServerGroupBackendServers", "rsp-web80/i-spot1:80", "ok"),
            ("RemoveVServerGroupBackendServers", "rsp-web80/i-spot1:8080", "ok"),
        ]


@pytest.mark.parametrize("action", ["stop", None], ids=["stop", "missing"])
def test_an_interruption_whose_action_is_not_delete_removes_nothing(action, caplog):
    with caplog.at_level("WARNING"), run_emulator(TWO_GROUPS) as emu, Worker(emu) as w:
        result = w.handle(interruption("i-spot1", action=action))

        assert result.outcome == "ignored" and result.actions == []
        assert calls(emu, "slb:RemoveVServerGroupBackendServers") == 0
        assert ("i-spot1", 80) in backends(emu, "rsp-web80")
    assert "not 'delete'" in caplog.text


def test_duplicate_event_and_instance_already_gone_are_done():
    with run_emulator(TWO_GROUPS) as emu, Worker(emu) as w:
        first = w.handle(interruption("i-spot1", 1))
        again = w.handle(interruption("i-spot1", 2))
        never_there = w.handle(interruption("i-nowhere", 3))

        assert first.outcome == "handled"
        assert again.outcome == "ignored" and again.error is None
        assert never_there.outcome == "ignored" and never_there.error is None
        assert calls(emu, "slb:RemoveVServerGroupBackendServers") == 2
        assert backends(emu, "rsp-web80") == {("i-keep1", 80): 100}


def test_duplicate_events_in_one_window_make_one_call_per_group():
    with run_emulator(TWO_GROUPS) as emu, Worker(emu, coalesce_ms=300) as w:
        futures = [w.dispatcher.start(interruption("i-spot1", n)) for n in range(3)]
        results = [f.result(30) for f in futures]

        assert [r.outcome for r in results] == ["handled"] * 3
        assert calls(emu, "slb:RemoveVServerGroupBackendServers") == 2
        assert all(len(r.actions) == 3 for r in results)  # each event shows its own part


def test_duplicate_arriving_while_the_first_call_is_in_flight_makes_no_second_call():
    groups = ["rsp-web80", "rsp-api443"]  # configured: membership is cached, no per-event lookup
    with run_emulator(TWO_GROUPS) as emu, Worker(emu, coalesce_ms=20, vserver_groups=groups) as w:
        w.handle(interruption("i-keep1", 99))  # warm the membership cache
        emu.set_faults({"slb": {"latency_ms": 400}})
        emu.reset_calls()
        first = w.start(interruption("i-spot1", 0))
        time.sleep(0.2)  # the first window has closed; its Remove calls are in flight
        second = w.start(interruption("i-spot1", 1))
        results = [first.result(30), second.result(30)]

        assert [r.outcome for r in results] == ["handled", "handled"]
        assert calls(emu, "slb:RemoveVServerGroupBackendServers") == 2  # one per group, not four
        assert all(a.result == "ok" for r in results for a in r.actions)
        assert {a.detail for a in results[1].actions} == {"already removed by an earlier call"}


def test_dry_run_changes_nothing_and_reports_the_plan():
    with run_emulator(TWO_GROUPS) as emu, Worker(emu, dry_run=True) as w:
        before = emu.state()["load_balancers"]
        result = w.handle(interruption("i-spot1"))

        assert result.outcome == "handled"
        assert emu.state()["load_balancers"] == before
        assert calls(emu, "slb:RemoveVServerGroupBackendServers") == 0
        assert calls(emu, "slb:SetVServerGroupAttribute") == 0
        assert sorted((a.target, a.dry_run, a.result) for a in result.actions) == [
            ("rsp-api443/i-spot1:443", True, "planned"),
            ("rsp-web80/i-spot1:80", True, "planned"),
            ("rsp-web80/i-spot1:8080", True, "planned"),
        ]


def test_dry_run_without_a_reachable_cloud_reports_an_unverified_plan():
    with run_emulator(TWO_GROUPS) as emu:
        w = Worker(emu, dry_run=True, cloud={"endpoint": "127.0.0.1:9", "max_retries": 0})
        with w:
            result = w.handle(interruption("i-spot1"))

    assert result.outcome == "handled"
    [action] = result.actions
    assert (action.target, action.dry_run, action.result) == ("?/i-spot1", True, "planned")
    assert action.detail.startswith("unverified: could not read SLB: SDK.HttpError")


def test_without_dry_run_a_failed_read_fails_the_event_so_it_comes_back():
    with run_emulator(TWO_GROUPS) as emu, Worker(emu, vserver_groups=["rsp-missing"]) as w:
        result = w.handle(interruption("i-spot1"))

        assert result.outcome == "failed"
        assert "InvalidVServerGroupId.NotFound" in result.error
        assert backends(emu, "rsp-web80")[("i-spot1", 80)] == 100


def test_drain_sets_weight_zero_then_removes_after_the_deferral():
    with run_emulator(TWO_GROUPS) as emu, Worker(emu, drain_seconds=30) as w:
        event = interruption("i-spot1")
        first = w.handle(event)

        assert first.outcome == "deferred" and 29 <= first.defer_seconds <= 30
        assert backends(emu, "rsp-web80") == {("i-spot1", 80): 0, ("i-spot1", 8080): 0, ("i-keep1", 80): 100}
        assert backends(emu, "rsp-api443")[("i-spot1", 443)] == 0

        second = w.handle(event, resume={"slb": time.time() - 30})
        assert second.outcome == "handled"
        assert backends(emu, "rsp-web80") == {("i-keep1", 80): 100}
        assert {a.action for a in first.actions + second.actions} == {
            "SetVServerGroupAttribute", "RemoveVServerGroupBackendServers"}


def test_drain_is_skipped_when_the_notice_is_nearly_over():
    with run_emulator(TWO_GROUPS) as emu, Worker(emu, drain_seconds=120) as w:
        result = w.handle(interruption("i-spot1", when=time.time() - 250))  # 50 s of notice left

        assert result.outcome == "handled"
        assert calls(emu, "slb:SetVServerGroupAttribute") == 0
        assert ("i-spot1", 80) not in backends(emu, "rsp-web80")


def wave_fleet(groups=25, per_group=20, lbs=5):
    return fleet([
        {"id": f"lb-{l}", "vserver_groups": [
            {"id": f"rsp-{g:02d}", "backend_servers":
                [{"server_id": f"i-wave{g:02d}{n:02d}", "port": 80} for n in range(per_group)]
                + [{"server_id": f"i-stay{g:02d}", "port": 80}]}
            for g in range(groups) if g % lbs == l]}
        for l in range(lbs)])


def test_wave_of_500_under_slb_throttling_is_removed_in_few_calls():
    state = wave_fleet()
    state["faults"] = {"slb": {"throttle_rps": 20}}
    ids = [f"i-wave{g:02d}{n:02d}" for g in range(25) for n in range(20)]
    with run_emulator(state) as emu, Worker(emu) as w:
        futures = [w.dispatcher.start(interruption(i)) for i in ids]
        done, not_done = wait(futures, timeout=60)

        assert not not_done
        results = [f.result() for f in futures]
        assert [r.outcome for r in results].count("handled") == 500, {r.error for r in results}
        for g in range(25):
            assert backends(emu, f"rsp-{g:02d}") == {(f"i-stay{g:02d}", 80): 100}
        removes = calls(emu, "slb:RemoveVServerGroupBackendServers")
        assert 25 <= removes <= 30  # 500 servers / 20 per call; a few extra for throttled retries
        assert all(len(r.actions) == 1 and r.actions[0].result == "ok" for r in results)
        # Each reclaimed instance counts against its group's guard (counted a batch at a time).
        out = w.runtime.store._run("SELECT grp, COUNT(DISTINCT holder) FROM reservations GROUP BY grp")
        assert dict(out) == {f"clb:rsp-{g:02d}": 20 for g in range(25)}


def test_throttling_beyond_our_own_limit_is_retried_not_failed():
    state = wave_fleet(groups=2, per_group=20, lbs=1)
    state["faults"] = {"slb": {"throttle_rps": 4, "throttle_burst": 1}}
    ids = [f"i-wave{g:02d}{n:02d}" for g in range(2) for n in range(20)]
    with run_emulator(state) as emu, Worker(emu, cloud={"slb_rps": 50}, vserver_groups=["rsp-00", "rsp-01"]) as w:
        futures = [w.dispatcher.start(interruption(i)) for i in ids]
        results = [f.result(60) for f in futures]

        assert {r.outcome for r in results} == {"handled"}
        assert sum(n for (api, code), n in w.runtime.cloud.retries.items() if code == "Throttling.User") > 0
        assert backends(emu, "rsp-00") == {("i-stay00", 80): 100}


def test_a_busy_groups_members_leave_in_its_one_retried_call_at_the_next_token():
    """Half the Removes answered SystemBusy: each busy answer costs exactly one more call with
    the same members (not a split, not the event failed and re-sent), retried at the next
    rate-limit token with no backoff sleep, and the rate is kept (no throttling)."""
    state = wave_fleet(groups=10, per_group=5, lbs=2)
    state["faults"] = {"slb": {"error_rate": 0.5, "error_code": "SystemBusy", "throttle_rps": 20,
                               "actions": ["RemoveVServerGroupBackendServers"]}}
    ids = [f"i-wave{g:02d}{n:02d}" for g in range(10) for n in range(5)]
    with run_emulator(state) as emu, Worker(emu, cloud={"max_retries": 20}) as w:
        cloud, slept = w.runtime.cloud, []
        cloud._sleep = slept.append  # the client's backoff sleeps, recorded instead of slept
        results = [f.result(60) for f in [w.dispatcher.start(interruption(i)) for i in ids]]

        assert all(r.outcome == "handled" and [a.result for a in r.actions] == ["ok"] for r in results)
        busy = cloud.retries[("slb", "SystemBusy")]
        assert busy > 0 and calls(emu, "slb:RemoveVServerGroupBackendServers") == 10 + busy
        assert slept == [] and set(cloud.retries) == {("slb", "SystemBusy")}
        assert all(backends(emu, f"rsp-{g:02d}") == {(f"i-stay{g:02d}", 80): 100} for g in range(10))


def test_wave_arriving_over_longer_than_the_window_makes_one_call_per_group():
    """The notices come over 1 s, the window is 200 ms: the first jobs' groups are still being
    read (12 reads at 5/s) when the rest arrive, and those join before any Remove leaves."""
    state = wave_fleet(groups=10, per_group=10, lbs=2)
    ids = [f"i-wave{g:02d}{n:02d}" for n in range(10) for g in range(10)]  # every group in every chunk
    with run_emulator(state) as emu, Worker(emu, coalesce_ms=200, cloud={"slb_rps": 5}) as w:
        futures = []
        for chunk in range(10):
            futures += [w.dispatcher.start(interruption(i)) for i in ids[chunk * 10:(chunk + 1) * 10]]
            time.sleep(0.1)
        results = [f.result(60) for f in futures]

        assert [r.outcome for r in results].count("handled") == 100, {r.error for r in results}
        for g in range(10):
            assert backends(emu, f"rsp-{g:02d}") == {(f"i-stay{g:02d}", 80): 100}
        assert calls(emu, "slb:RemoveVServerGroupBackendServers") == 10  # one per group of 10


def test_a_later_notice_while_the_listing_is_fresh_makes_no_second_listing_nor_lookup():
    """A wave's one paged DescribeLoadBalancers serves a notice coming after it while the
    listing is fresh (`discovery_ttl`): no second listing, no per-instance lookup."""
    with run_emulator(wave_fleet(groups=4, per_group=5, lbs=2)) as emu, Worker(emu) as w:
        wave = [w.dispatcher.start(interruption(f"i-wave{g:02d}{n:02d}")) for g in range(4) for n in range(4)]
        assert {f.result(30).outcome for f in wave} == {"handled"}
        assert w.handle(interruption("i-wave0004")).outcome == "handled"

        assert calls(emu, "slb:DescribeLoadBalancers") == 1
        assert backends(emu, "rsp-00") == {("i-stay00", 80): 100}


def test_items_arriving_while_a_group_waits_for_its_turn_join_that_call():
    from ecs_worker.plugins.lb.batch import KeyedBatcher
    import threading
    from contextlib import contextmanager

    sent, waiting, go = [], threading.Event(), threading.Event()

    @contextmanager
    def turn(key):  # the rate limit: the first call waits until more items have come
        waiting.set()
        go.wait(5)
        yield

    batcher = KeyedBatcher(lambda key, kind, items: sent.append((key, list(items))), max_batch=3, turn=turn)
    done = []
    batcher.put([("g1", "remove", "a", done.append)])
    assert waiting.wait(5)
    batcher.put([("g1", "remove", x, done.append) for x in "bcd"])
    go.set()
    deadline = time.monotonic() + 5
    while len(done) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    batcher.close()
    assert sent == [("g1", ["a", "b", "c"]), ("g1", ["d"])]  # up to the per-call limit, then the rest
