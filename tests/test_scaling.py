"""The `scaling` plugin and the lifecycle-hook contract against the emulator's ESS, through the
real SDKs: a wave of scale-ins across CLB, ALB and NLB (under both readings of when ESS detaches
attached groups), verification before acting, heartbeats while another plugin works, and a
token that expired before the worker came to it."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ecs_worker import hookimpl
from ecs_worker.events.event import parse_event
from ecs_worker.plugins import scaling
from ecs_worker.testing import Harness, run_emulator
from scaling_kit import actions, body_json, fleet, memberships, notifications


def worker(emu, **config):
    config.setdefault("coalesce_ms", 50)  # the wave test below keeps the plugin's own window
    return Harness(scaling.ScalingPlugin(), dry_run=False, emulator=emu, config=config, call_timeout=20)


def run_to_end(h, event, rounds=60):
    """Dispatch as the worker does: again after each deferral (with the resume mapping and its
    state), until the outcome is final. Returns the last result and the rounds it took."""
    resume = None
    for n in range(1, rounds + 1):
        result = h.dispatch(event, resume)
        if result.outcome != "deferred":
            return result, n
        assert result.defer_seconds <= 5, f"a test deferral of {result.defer_seconds}s"  # never hang
        time.sleep(result.defer_seconds)
        resume = result.resume(resume)
    raise AssertionError("still deferred")


@pytest.mark.parametrize("detach", ["before", "after"])
def test_a_scale_in_of_20_instances_completes_every_hook_with_each_out_of_every_group_first(detach):
    with run_emulator(fleet(groups=2, per_group=10, detach=detach)) as emu:
        for g in range(2):  # five activities of two instances per group: ten hooks at once
            for n in range(0, 10, 2):
                emu.scale_in(f"asg-{g}", [f"i-asg{g}n{n:02d}", f"i-asg{g}n{n + 1:02d}"])
        bodies = notifications(emu)
        assert len(bodies) == 10
        emu.reset_calls()
        with worker(emu, coalesce_ms=1000) as h:  # the plugin's default window
            futures = [h.start(parse_event(b)) for b in bodies]  # a wave: all in flight together
            results = [f.result(30) for f in futures]
        assert {r.outcome for r in results} == {"handled"}, [r.error for r in results]
        done = actions(emu)
        assert len(done) == 10 and {(a["status"], a["result"]) for a in done} == {("Completed", "CONTINUE")}
        # when each wait ended, no load balancer held any of its instances (attached or not)
        assert all(groups == [] for a in done for groups in a["members_at_end"].values())
        calls = emu.state()["calls"]
        clb_groups = 2 if detach == "before" else 4  # ESS emptied the attached ones already
        assert calls.get("slb:RemoveVServerGroupBackendServers", 0) <= clb_groups  # coalesced: ≤ 20 a call
        for kind in ("alb", "nlb"):
            assert calls.get(f"{kind}:RemoveServersFromServerGroup", 0) <= (0 if detach == "before" else 2)
        assert calls["ess:CompleteLifecycleAction"] == 10
        state = emu.state()
        assert state["ess"]["scaling_groups"][0]["instances"] == []  # ESS went on: removed and released
        assert not any(i["id"].startswith("i-asg") for i in state["instances"])


def test_a_forged_notification_removes_nothing():
    with run_emulator(fleet(groups=1, per_group=2)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        real = body_json(notifications(emu)[0])
        forged = json.loads(json.dumps(real))
        forged["content"].update(lifecycleActionToken="FORGED-TOKEN", instanceIds=["i-asg0n01"])
        with worker(emu) as h:
            result = h.dispatch(parse_event(json.dumps(forged)))
        assert result.outcome == "ignored" and result.actions == []
        assert memberships(emu, "i-asg0n01") and memberships(emu, "i-asg0n00")  # nobody touched
        assert actions(emu)[0]["status"] == "Pending"


def test_only_the_instances_ess_lists_are_taken_out():
    with run_emulator(fleet(groups=1, per_group=2)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        doc = body_json(notifications(emu)[0])
        doc["content"]["instanceIds"] = ["i-asg0n00", "i-asg0n01"]  # one more than ESS holds
        with worker(emu) as h:
            assert h.dispatch(parse_event(json.dumps(doc))).outcome == "handled"
        assert memberships(emu, "i-asg0n01") != []


class Slowpoke:
    """Another plugin taking the hook: works (defers) until `until`, then is done."""

    name = "slowpoke"

    def __init__(self, seconds: float) -> None:
        self.until = time.time() + seconds
        self.calls = 0

    @hookimpl
    def on_lifecycle_hook(self, event, ctx):
        self.calls += 1
        left = self.until - time.time()
        if left > 0:
            ctx.defer(left, "flushing the instance's caches")
            return "still flushing"
        return "flushed"


def test_a_hook_whose_work_outlives_its_timeout_is_kept_open_by_heartbeats():
    # HeartbeatTimeout 30 s at a time scale of 1/20: the wait times out after 1.5 s unless kept open
    with run_emulator(fleet(groups=1, per_group=2, time_scale=0.05, timeout=30)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        event = parse_event(notifications(emu)[0])
        slow = Slowpoke(3.3)  # more than two hook timeouts
        with worker(emu, heartbeat_seconds=0.2, coalesce_ms=0) as h:  # no window: the wait is short
            h.plugins.register(slow, "slowpoke", "test")
            started = time.time()
            result, rounds = run_to_end(h, event)
        assert result.outcome == "handled", result.error
        assert time.time() - started >= 3.3
        (action,) = actions(emu)
        assert (action["status"], action["result"]) == ("Completed", "CONTINUE")
        assert action["heartbeats"] >= 5 and rounds >= 5 and slow.calls == rounds  # every 0.2 s
        assert action["members_at_end"] == {"i-asg0n00": []}


def test_a_plugin_failing_completes_with_the_configured_result_once_out_of_service():
    class Broken:
        @hookimpl
        def on_lifecycle_hook(self, event, ctx):
            raise RuntimeError("the deregistration service is down")

    with run_emulator(fleet(groups=1, per_group=2)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        with worker(emu, on_failure="ROLLBACK") as h:
            h.plugins.register(Broken(), "broken", "test")
            result = h.dispatch(parse_event(notifications(emu)[0]))
        assert result.outcome == "failed" and "deregistration" in result.error
        assert "completed ROLLBACK" in result.plugins["scaling"].detail
        (action,) = actions(emu)
        assert action["result"] == "ROLLBACK" and action["members_at_end"] == {"i-asg0n00": []}
        assert "i-asg0n00" in emu.state()["ess"]["scaling_groups"][0]["instances"]  # kept, as chosen


def test_an_expired_token_is_settled_with_a_clear_line_not_retried(caplog):
    with run_emulator(fleet(groups=1, per_group=2, time_scale=0.01, timeout=30, default_result="ABANDON")) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        event = parse_event(notifications(emu)[0])
        time.sleep(0.6)  # the 0.3 s wait has timed out: the token is no longer in process
        with worker(emu) as h:
            result = h.dispatch(event)
        assert result.outcome == "handled"  # settled: the message is deleted, never retried
        detail = result.plugins["scaling"].detail
        assert "had already ended: Timeout, result ABANDON" in detail and "settled" in detail
        assert any("had already ended" in r.getMessage() for r in caplog.records)
        assert emu.state()["calls"].get("ess:CompleteLifecycleAction", 0) == 0


def test_a_scale_out_is_completed_once_the_launch_plugins_are_done():
    with run_emulator(fleet(groups=1, per_group=1)) as emu:
        started = emu.scale_out("asg-0", 2)
        event = parse_event(notifications(emu)[0])
        assert event.name == "LifecycleHook:SCALE_OUT" and list(event.lifecycle.instance_ids) == started["instances"]
        with worker(emu, heartbeat_seconds=0.1) as h:
            h.plugins.register(Slowpoke(0.3), "slowpoke", "test")
            result, rounds = run_to_end(h, event)
        assert result.outcome == "handled" and rounds >= 2
        (action,) = actions(emu)
        assert (action["status"], action["result"]) == ("Completed", "CONTINUE")
        for iid in started["instances"]:  # in service now: in the attached groups
            assert {m.split(":")[0] for m in memberships(emu, iid)} == {"clb", "alb", "nlb"}


def test_a_plugin_working_past_max_hold_is_not_allowed_to_hold_the_scale_in_hostage():
    with run_emulator(fleet(groups=1, per_group=1)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        event = parse_event(notifications(emu)[0])
        with worker(emu, heartbeat_seconds=0.1, max_hold_minutes=0.01) as h:  # 0.6 s
            h.plugins.register(Slowpoke(3600), "slowpoke", "test")
            resume, started = None, time.time()
            while time.time() - started < 10:  # the slow plugin defers for an hour: watch the scaling plugin
                result = h.dispatch(event, resume)
                if result.plugins["scaling"].status != "deferred":
                    break
                time.sleep(result.defer_seconds)
                resume = result.resume(resume)
        # completed with the failure result, saying why; the slow plugin goes on on its own
        assert "completed CONTINUE: held 0.01 min while slowpoke still working" in result.plugins["scaling"].detail
        assert result.plugins["slowpoke"].status == "deferred" and "scaling" not in result.resume()
        (action,) = actions(emu)
        assert (action["status"], action["result"]) == ("Completed", "CONTINUE") and action["heartbeats"] >= 3


def test_drain_sets_weight_0_first_and_removes_after_drain_seconds_keeping_the_hook_open():
    with run_emulator(fleet(groups=1, per_group=1)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        event = parse_event(notifications(emu)[0])
        with worker(emu, drain_seconds=0.5, heartbeat_seconds=0.2) as h:
            first = h.dispatch(event)
            assert first.outcome == "deferred"
            assert sorted(memberships(emu, "i-asg0n00")) == ["alb:sgp-alb0:80", "clb:rsp-asg0:80", "clb:rsp-other0:8080",
                                                             "nlb:sgp-nlb0:443"]  # still in, at weight 0
            weights = {s["weight"] for g in emu.state()["alb_server_groups"] for s in g["servers"]}
            assert weights == {0}
            started = time.time()
            result, _ = run_to_end(h, event)
        assert result.outcome == "handled" and time.time() - started >= 0.2
        (action,) = actions(emu)
        assert (action["status"], action["result"]) == ("Completed", "CONTINUE")
        assert action["members_at_end"] == {"i-asg0n00": []} and action["heartbeats"] >= 1


def test_replay_dry_run_plans_everything_even_when_ess_cannot_be_read():
    with run_emulator(fleet(groups=1, per_group=1)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        event = parse_event(notifications(emu)[0])
        emu.set_faults({"ess": {"error_rate": 1.0, "error_code": "Forbidden.RAM", "error_status": 403}})
        with Harness(scaling.ScalingPlugin(), dry_run=True, emulator=emu, config={"coalesce_ms": 0}) as h:
            result = h.replay(event)
        planned = {(a.action, a.result) for a in result.actions}
        assert ("CompleteLifecycleAction", "planned") in planned
        assert ("RemoveVServerGroupBackendServers", "planned") in planned
        assert actions(emu)[0]["status"] == "Pending" and memberships(emu, "i-asg0n00")  # nothing changed


def test_when_its_own_removal_fails_the_hook_is_kept_open_and_never_completed_by_the_worker():
    with run_emulator(fleet(groups=1, per_group=1)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        event = parse_event(notifications(emu)[0])
        emu.set_faults({"slb": {"error_rate": 1.0, "error_code": "Forbidden.RAM", "error_status": 403}})
        with worker(emu, heartbeat_seconds=0.1) as h:
            result = h.dispatch(event)
            assert result.outcome == "failed" and "Forbidden.RAM" in result.error
            assert result.plugins["scaling"].state["heartbeats"] == 1  # the hold travels with the retry
            (action,) = actions(emu)
            assert action["status"] == "Pending" and action["heartbeats"] == 1  # kept open for the retry
            emu.set_faults({"slb": {}})  # the next attempt succeeds
            again = h.dispatch(event, result.resume())
        assert again.outcome == "handled", again.error
        (action,) = actions(emu)
        assert (action["status"], action["result"]) == ("Completed", "CONTINUE")
        assert action["members_at_end"] == {"i-asg0n00": []}


def test_an_unknown_lifecycle_result_is_a_config_error_naming_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[plugins.scaling]\non_failure = "RETRY"\n')
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "check-config", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "[plugins.scaling] on_failure" in proc.stderr and "'ROLLBACK'" in proc.stderr and "RETRY" in proc.stderr
