"""The `restart` plugin against the emulator with the real SDKs: opt-in, grace re-read,
races, locks, spot notices, budgets (persisted), dry-run."""
from __future__ import annotations

import json
import logging
import time

import pytest

from ecs_worker.events.event import parse_event
from ecs_worker.plugins import restart as restart_plugin
from ecs_worker.testing import Harness, run_emulator

REGION = "cn-hangzhou"
KEY = {"access_key_id": "LTAIrestart0001", "access_key_secret": "restart-test-secret-0001"}
OPT_IN = {"ecs-worker:auto-restart": "true"}


def fleet(*instances):
    return {"region": REGION, "account_id": "1690000000000000", "credentials": [KEY],
            "instances": list(instances), "start_delay_seconds": 0, "stop_delay_seconds": 0}


def instance(iid, status="Stopped", tags=OPT_IN, **extra):
    return {"id": iid, "status": status, "tags": dict(tags), **extra}


def stopped(instance_id, n=0, region=REGION):
    return parse_event(json.dumps({
        "ver": "1.0", "id": f"evt-{instance_id}-{n}", "product": "ECS", "level": "INFO",
        "name": "Instance:StateChange", "regionId": region, "eventTime": "20261127T121826.922+0800",
        "resourceId": f"acs:ecs:{region}:1690000000000000:instance/{instance_id}",
        "content": {"resourceId": instance_id, "resourceType": "ALIYUN::ECS::Instance", "state": "Stopped"}}))


def interruption(instance_id):
    return parse_event(json.dumps({
        "id": f"spot-{instance_id}", "name": "Instance:PreemptibleInstanceInterruption", "regionId": REGION,
        "content": {"instanceId": instance_id, "action": "delete"}}))


class Worker(Harness):
    """The restart plugin alone, behind the real dispatcher, pointed at an emulator."""

    def __init__(self, emu, state_dir, dry_run=False, cloud=None, settings=None, **restart):
        restart.setdefault("grace_seconds", 0)
        self.restart = restart_plugin.RestartPlugin()
        super().__init__(self.restart, config=restart, dry_run=dry_run, emulator=emu, call_timeout=10,
                         settings={"worker": {"state_dir": str(state_dir), **(settings or {})},
                                   "cloud": cloud or {}})

    def handle(self, event, resume=None):
        return self.start(event, resume).result(30)


def status(emu, iid):
    return next(i["status"] for i in emu.state()["instances"] if i["id"] == iid)


def starts(emu):
    return emu.state()["calls"].get("ecs:StartInstance", 0)


def test_tagged_stopped_instance_is_restarted(tmp_path):
    with run_emulator(fleet(instance("i-tagged"))) as emu, Worker(emu, tmp_path) as w:
        result = w.handle(stopped("i-tagged"))

        assert result.outcome == "handled", result.error
        assert status(emu, "i-tagged") in ("Starting", "Running")
        assert [(a.plugin, a.action, a.target, a.result) for a in result.actions] == [
            ("restart", "StartInstance", "i-tagged", "ok")]


def test_untagged_or_wrongly_tagged_instance_is_left_alone(tmp_path):
    state = fleet(instance("i-untagged", tags={"app": "web"}),
                  instance("i-wrong", tags={"ecs-worker:auto-restart": "false"}))
    with run_emulator(state) as emu, Worker(emu, tmp_path) as w:
        results = [w.handle(stopped("i-untagged")), w.handle(stopped("i-wrong"))]

        assert [r.outcome for r in results] == ["ignored", "ignored"]
        assert starts(emu) == 0 and status(emu, "i-untagged") == "Stopped"


def test_empty_require_tag_means_every_instance_with_a_warning(tmp_path, caplog):
    state = fleet(instance("i-untagged", tags={}))
    with caplog.at_level(logging.WARNING), run_emulator(state) as emu, \
            Worker(emu, tmp_path, require_tag="") as w:
        assert w.handle(stopped("i-untagged")).outcome == "handled"
    assert "require_tag is empty" in caplog.text


def test_grace_period_defers_then_a_reread_showing_running_skips(tmp_path):
    with run_emulator(fleet(instance("i-tagged"))) as emu, Worker(emu, tmp_path, grace_seconds=60) as w:
        event = stopped("i-tagged")
        first = w.handle(event)
        assert first.outcome == "deferred" and first.defer_seconds == 60
        assert starts(emu) == 0

        w.runtime.cloud.ecs("StartInstance", InstanceId="i-tagged")  # an operator starts it meanwhile
        again = w.handle(event, resume={"restart": time.time() - 61})

        assert again.outcome == "ignored" and again.actions == []
        assert starts(emu) == 1  # the operator's only


def test_incorrect_instance_status_on_start_counts_as_done(tmp_path):
    with run_emulator(fleet(instance("i-tagged"))) as emu, Worker(emu, tmp_path) as w:
        cloud = w.runtime.cloud
        real_ecs = cloud.ecs

        def operator_wins_the_race(action, **params):
            if action == "StartInstance":  # someone starts it between our re-read and our start
                real_ecs("StartInstance", **params)
            return real_ecs(action, **params)

        cloud.ecs = operator_wins_the_race
        result = w.handle(stopped("i-tagged"))

        assert result.outcome == "handled" and result.error is None
        [action] = result.actions
        assert (action.result, action.detail) == ("ok", "already started by someone else")
        assert starts(emu) == 2  # the operator's and our refused one


def test_incorrect_instance_status_for_a_still_stopped_instance_is_a_failure_not_done(tmp_path):
    """ECS answers IncorrectInstanceStatus for any state it refuses, a lock included: the
    plugin re-reads the instance instead of reporting "already started"."""
    with run_emulator(fleet(instance("i-locked", locks=["Recycling"]))) as emu, Worker(emu, tmp_path) as w:
        with pytest.raises(Exception) as caught:
            restart_plugin.start_instance(w.runtime.cloud, "i-locked")
        assert caught.value.code == "IncorrectInstanceStatus"
        assert "Stopped" in str(caught.value) and "Recycling" in str(caught.value)
        assert emu.state()["calls"]["ecs:DescribeInstances"] == 1  # the re-read
        assert status(emu, "i-locked") == "Stopped"


@pytest.mark.parametrize("extra", [{"locks": ["Recycling"]}, {"locks": ["Financial"]}], ids=["recycling", "financial"])
def test_locked_instance_is_not_started(tmp_path, extra):
    with run_emulator(fleet(instance("i-locked", **extra))) as emu, Worker(emu, tmp_path) as w:
        assert w.handle(stopped("i-locked")).outcome == "ignored"
        assert starts(emu) == 0


def test_spot_instance_with_an_interruption_notice_is_not_started(tmp_path):
    state = fleet(instance("i-spot", spot=True), instance("i-spot-quiet", spot=True))
    with run_emulator(state) as emu, Worker(emu, tmp_path) as w:
        noted = w.handle(interruption("i-spot"))
        assert noted.outcome == "ignored"  # noting is not handling

        assert w.handle(stopped("i-spot")).outcome == "ignored"
        assert w.handle(stopped("i-spot-quiet")).outcome == "handled"
        assert status(emu, "i-spot") == "Stopped"


def stop(emu, iid):
    """An operator's stop, through the real SDK (the worker itself never stops an instance)."""
    from aliyunsdkecs.request.v20140526.StopInstanceRequest import StopInstanceRequest

    from ecs_worker.testing import acs_client

    request = StopInstanceRequest()
    request.set_InstanceId(iid)
    request.set_endpoint(emu.endpoint)
    request.set_protocol_type("http")
    acs_client(emu, auto_retry=False).do_action_with_exception(request)


def test_budget_stops_the_fourth_restart_within_the_hour_and_survives_a_worker_restart(tmp_path, caplog):
    with run_emulator(fleet(instance("i-flappy"))) as emu:
        with Worker(emu, tmp_path) as w:
            outcomes = []
            for n in range(4):
                outcomes.append(w.handle(stopped("i-flappy", n)).outcome)
                if n < 3:
                    stop(emu, "i-flappy")  # it crashes again
            assert outcomes == ["handled", "handled", "handled", "ignored"]
            assert starts(emu) == 3
            assert any(r.levelno == logging.ERROR and "i-flappy" in r.getMessage() for r in caplog.records)

        with Worker(emu, tmp_path) as w:  # a new process reads the saved budget
            assert w.handle(stopped("i-flappy", 9)).outcome == "ignored"
        assert starts(emu) == 3 and status(emu, "i-flappy") == "Stopped"


def test_global_per_minute_cap_defers_the_next_restart(tmp_path):
    state = fleet(*(instance(f"i-{n}") for n in range(3)))
    with run_emulator(state) as emu, Worker(emu, tmp_path, max_restarts_per_minute=2) as w:
        results = [w.handle(stopped(f"i-{n}")) for n in range(3)]

        assert [r.outcome for r in results] == ["handled", "handled", "deferred"]
        assert 1 <= results[2].defer_seconds <= 60
        assert status(emu, "i-2") == "Stopped"


def test_after_a_budget_deferral_the_grace_is_not_served_again(tmp_path):
    state = fleet(*(instance(f"i-{n}") for n in range(2)))
    with run_emulator(state) as emu, \
            Worker(emu, tmp_path, grace_seconds=60, max_restarts_per_minute=1) as w:
        back = {"restart": time.time() - 60}
        assert w.handle(stopped("i-0"), resume=back).outcome == "handled"
        capped = w.handle(stopped("i-1"), resume=back)
        assert capped.outcome == "deferred" and capped.defer_seconds <= 60

        w.runtime.store._run("DELETE FROM budget_takes")  # stands in for the minute passing
        again = w.handle(stopped("i-1"), resume={"restart": time.time() - capped.defer_seconds})
        assert again.outcome == "handled", "a second grace period was started"
        assert status(emu, "i-1") in ("Starting", "Running")


def test_dry_run_reads_but_starts_nothing(tmp_path):
    with run_emulator(fleet(instance("i-tagged"))) as emu, Worker(emu, tmp_path, dry_run=True) as w:
        result = w.handle(stopped("i-tagged"))

        assert result.outcome == "handled"
        assert [(a.action, a.target, a.dry_run, a.result) for a in result.actions] == [
            ("StartInstance", "i-tagged", True, "planned")]
        assert starts(emu) == 0 and status(emu, "i-tagged") == "Stopped"
        assert not list(tmp_path.iterdir())  # dry-run takes no budget: nothing written


def test_failed_read_without_dry_run_fails_so_the_message_returns(tmp_path):
    with run_emulator(fleet(instance("i-tagged"))) as emu, \
            Worker(emu, tmp_path, cloud={"endpoint": "127.0.0.1:9", "max_retries": 0}) as w:
        result = w.handle(stopped("i-tagged"))
        assert result.outcome == "failed" and "SDK.HttpError" in result.error


def test_event_for_another_region_is_not_acted_on(tmp_path):
    with run_emulator(fleet(instance("i-tagged"))) as emu, Worker(emu, tmp_path) as w:
        assert w.handle(stopped("i-tagged", region="cn-beijing")).outcome == "ignored"
        assert emu.state()["calls"] == {}
