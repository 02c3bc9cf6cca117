"""The maintenance sequence in real worker processes: a worker killed (SIGKILL) between
taking an instance out of its load balancers and putting it back; the restarted worker
finishes the sequence from the state the message carries, without a second reboot."""
from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timezone

import pytest

from ecs_worker.testing import run_emulator
from runner_kit import DLQ, QUEUE, Worker, connection_toml, depth, wait_until

IID = "i-maint1"
KEY = {"access_key_id": "LTAIrmtest0001", "access_key_secret": "rm-test-secret-0001"}

pytestmark = pytest.mark.slow


def world(not_before: float) -> dict:
    nb = datetime.fromtimestamp(not_before, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"region": "cn-hangzhou", "account_id": "1690000000000000", "credentials": [KEY],
            "queues": [{"name": QUEUE, "visibility_timeout": 3}, {"name": DLQ}],
            "start_delay_seconds": 3, "stop_delay_seconds": 3, "job_delay_seconds": 0.2,
            "instances": [{"id": IID, "status": "Running", "tags": {"ecs-worker:maintenance": "auto"},
                           "scheduled_events": [{"event_id": "e-rm1", "event_type": "SystemMaintenance.Reboot",
                                                 "not_before": nb}]}],
            "load_balancers": [{"id": "lb-1", "vserver_groups": [{"id": "rsp-web80", "backend_servers": [
                {"server_id": IID, "port": 80, "weight": 70}]}]}],
            "alb_server_groups": [{"id": "sgp-alb", "servers": [{"server_id": IID, "port": 8080, "weight": 50}]}],
            "nlb_server_groups": [{"id": "sgp-nlb", "servers": [{"server_id": IID, "port": 443}]}]}


def body(not_before: float) -> str:
    nb = datetime.fromtimestamp(not_before, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"ver": "1.0", "id": "evt-rm1", "product": "ECS", "level": "CRITICAL",
                       "name": "Instance:SystemMaintenance.Reboot:Scheduled", "regionId": "cn-hangzhou",
                       "resourceId": f"acs:ecs:cn-hangzhou:1690000000000000:instance/{IID}",
                       "content": {"eventId": "e-rm1", "eventType": "SystemMaintenance.Reboot",
                                   "eventStatus": "Scheduled", "notBefore": nb, "instanceId": IID}})


def config(tmp_path, emu, state_dir: str) -> object:
    path = tmp_path / f"{state_dir}.toml"
    path.write_text(connection_toml(emu, KEY["access_key_id"], KEY["access_key_secret"]) + f"""[worker]
state_dir = "{tmp_path / state_dir}"
max_attempts = 3
retry_base_seconds = 1
retry_max_seconds = 2
[guard]
keep_healthy = 0  # this world's ALB/NLB groups have one member: the guard would keep it in
[plugins]
disabled = ["hello", "restart", "slb", "webhook"]
[plugins.maintenance]
poll_seconds = 2
""")
    return path


def groups(emu):
    s = emu.state()
    clb = s["load_balancers"][0]["vserver_groups"][0]["backend_servers"]
    return ({(b["server_id"], b["port"], b["weight"]) for b in clb},
            {(x["server_id"], x["port"], x["weight"]) for x in s["alb_server_groups"][0]["servers"]},
            {(x["server_id"], x["port"], x["weight"]) for x in s["nlb_server_groups"][0]["servers"]})


IN = ({(IID, 80, 70)}, {(IID, 8080, 50)}, {(IID, 443, 100)})


def test_worker_killed_between_removal_and_restore_the_restarted_worker_puts_it_back(tmp_path):
    nb = time.time() + 2 * 3600
    with run_emulator(world(nb)) as emu:
        emu.send(QUEUE, body(nb))
        first = Worker(config(tmp_path, emu, "host-a"))
        try:
            wait_until(lambda: groups(emu) == (set(), set(), set())
                       and emu.state()["calls"].get("ecs:RebootInstance") == 1,
                       timeout=60, message="the instance out of every group and rebooting")
            first.signal(signal.SIGKILL)
            first.wait(10)
        finally:
            first.stop()
        assert groups(emu) == (set(), set(), set())  # killed while out: nothing put it back yet

        second = Worker(config(tmp_path, emu, "host-a"))  # the same host's worker, restarted
        try:
            wait_until(lambda: groups(emu) == IN, timeout=60, message="the memberships restored")
            wait_until(lambda: sum(depth(emu).values()) == 0, timeout=30, message="the message settled and deleted")
        finally:
            second.finish(30)
        state = emu.state()
        assert state["calls"].get("ecs:RebootInstance") == 1  # no second reboot
        instance = state["instances"][0]
        assert instance["status"] == "Running"
        assert instance["scheduled_events"][0]["status"] == "Avoided"
        out = second.output()
        assert "action maintenance AddVServerGroupBackendServers on rsp-web80/i-maint1:80: ok" in out
        assert "action maintenance RebootInstance" not in out
        assert "handled 1" in out


def test_a_reboot_that_does_not_avoid_survives_kill_9_and_guards_notbefore(tmp_path):
    """The event stays Scheduled after our reboot: the first worker is killed (SIGKILL) while the
    instance is back in service waiting for notBefore; the restarted worker takes it out just
    before notBefore, puts it back after the platform's reboot, never reboots it itself again,
    and reports success only then."""
    nb = time.time() + 22
    state = world(nb)
    state["instances"][0]["scheduled_events"][0]["avoidable"] = False
    state["start_delay_seconds"] = state["stop_delay_seconds"] = 1
    with run_emulator(state) as emu:
        emu.send(QUEUE, body(nb))
        path = config(tmp_path, emu, "host-a")
        path.write_text(path.read_text() + "margin_minutes = 0\noutcome_seconds = 1\ntakeout_seconds = 8\n")
        first = Worker(path)
        try:
            wait_until(lambda: "the reboot did not avoid the event" in first.output(), timeout=40,
                       message="the warning that the reboot did not avoid the event")
            assert groups(emu) == IN  # healthy: back in service meanwhile
            first.signal(signal.SIGKILL)
            first.wait(10)
        finally:
            first.stop()
        assert "handled 1" not in first.output()

        second = Worker(path)
        try:
            wait_until(lambda: groups(emu) == (set(), set(), set()), timeout=40,
                       message="out of every group before notBefore")
            assert time.time() < int(nb) + 1 and emu.state()["instances"][0]["scheduled_events"][0]["status"] \
                == "Scheduled"
            wait_until(lambda: groups(emu) == IN and sum(depth(emu).values()) == 0, timeout=60,
                       message="back in after the platform's reboot, the message settled")
        finally:
            second.finish(30)
        state = emu.state()
        assert state["calls"].get("ecs:RebootInstance") == 1  # ours once; the platform's at notBefore
        assert state["instances"][0]["scheduled_events"][0]["status"] == "Executed"
        out = second.output()
        assert "action maintenance RebootInstance" not in out
        # A kill between re-sending a deferral and deleting the original leaves two copies (at least
        # once): each may settle, but none before notBefore has passed and the event is over.
        handled = [datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S") for line in out.splitlines()
                   if "-> handled" in line]
        assert handled and min(handled) >= datetime.fromtimestamp(int(nb)), (handled, nb)
