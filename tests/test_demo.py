"""`ecs-worker demo` (what `make run` runs): from `setup` on an empty emulator to a drained queue, with
a broken third-party plugin installed next to it that must change nothing."""
import json
import subprocess
import sys
import time

import broken_plugin

SPOTS = ["i-demospot00000000001", "i-demospot00000000002", "i-demospot00000000003"]


def test_demo_sets_up_and_shows_cause_and_effect(tmp_path):
    env = broken_plugin.install(tmp_path / "site")
    env.pop("ECS_WORKER_LOAD_PLUGINS", None)  # as a user's shell would have it
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "demo", "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - started < 60
    summary = json.loads(proc.stdout)
    assert summary["drained"] and summary["worker_exit_code"] == 0
    assert "setup: queue ecs-events: created" in proc.stderr and "setup: rule ecs-worker-ecs-events" in proc.stderr
    # Fleet events came through the CloudMonitor rule that setup made.
    assert summary["fleet_events"] >= 10 and summary["delivered_by_rule"] == summary["fleet_events"]
    assert summary["restarted"] == ["i-demoauto0000000001"]
    assert summary["not_restarted"] == ["i-demomanual00000001"]
    # Cause and effect: the worker saw the events its own restart caused, and left them alone.
    assert summary["restart_echoes"] == [
        {"instance_id": "i-demoauto0000000001", "state": "Starting", "outcome": "ignored"},
        {"instance_id": "i-demoauto0000000001", "state": "Running", "outcome": "ignored"}]
    scaled_in = "i-demoasg00000000001"  # the Auto Scaling part: scaled in, out of both groups first
    assert summary["removed_from_groups"] == {"rsp-web80": sorted([scaled_in, *SPOTS]),
                                              "rsp-web8080": sorted([scaled_in, *SPOTS])}
    assert [d["reason"] for d in summary["dead_letters"]] == ["invalid"]
    assert summary["events_by_outcome"]["invalid"] == 1
    assert summary["events_by_outcome"]["duplicate (skipped)"] == 1  # dedupe store at work
    assert summary["api_calls"]["ecs:StartInstance"] == 1
    # coalesced: one Remove call per group for the three interruptions (at most two each),
    # plus the maintenance scenario's one per group and the scale-in's one per group
    assert summary["api_calls"]["slb:RemoveVServerGroupBackendServers"] <= 4 + 2 + 2
    # scheduled maintenance avoided (out, reboot, back in) and a spot instance leaving an ALB group
    lines = summary["maintenance_and_alb"]
    assert "event e-demomaint000001 is now Avoided" in lines[0]
    assert "back in every group with the same ports and weights" in lines[0]
    assert f"removed {scaled_in}, i-demospot00000000001 from ALB server group sgp-demoalb0001" in lines
    assert summary["api_calls"]["ecs:RebootInstance"] == 1
    # not a terminal: no progress lines at all (on a terminal: one updating line, test_progress.py)
    assert "waiting," not in proc.stderr and "in flight" not in proc.stderr
    # a reason on every row, from the plugins themselves (ctx.skip, deferral reasons, results)
    assert all(e["why"] and e["why"] != "no plugin takes this event" for e in summary["events"]), summary["events"]
    assert any("no opt-in tag" in e["why"] for e in summary["events"] if e["outcome"] == "ignored")
    # calls counted per service, each the sum of its actions
    from ecs_worker.demo.summary import render
    text = render(summary)
    for prefix, label in (("ecs", "ECS"), ("slb", "CLB"), ("alb", "ALB"), ("nlb", "NLB"), ("ess", "ESS")):
        total = sum(n for k, n in summary["api_calls"].items() if k.startswith(prefix + ":"))
        assert total > 0 and f"\n{label} calls: {total} (" in text, text
    assert "SLB calls" not in text
    # Auto Scaling: setup made the hooks; the instance left every load balancer before ESS removed it
    assert "setup: lifecycle hook asg-demoweb00001 SCALE_IN: created" in proc.stderr
    scaling = summary["scaling"]
    assert f"scale-in: {scaled_in} was in 3 load-balancer entr(ies)" in scaling[0]
    assert scaling[0].endswith("out of every one when its lifecycle action ended")
    assert "lifecycle action Completed CONTINUE" in scaling[1] and "removed and released" in scaling[1]
    assert "queue ecs-events" in proc.stderr  # progress while it runs
    assert "broken" not in proc.stdout + proc.stderr


def test_two_workers_on_a_shared_store_tell_the_same_story(redis_server):
    """`ecs-worker demo --workers 2 --store redis://…`: the fleet shares dedupe and budgets."""
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "demo", "--json", "--workers", "2",
                           "--store", redis_server.url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 workers started" in proc.stderr and "sharing the store redis://127.0.0.1" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["drained"] and summary["worker_exit_code"] == 0
    assert summary["restarted"] == ["i-demoauto0000000001"] and summary["api_calls"]["ecs:StartInstance"] == 1
    assert summary["events_by_outcome"]["duplicate (skipped)"] == 1  # whichever worker got the copy
    scaled_in = "i-demoasg00000000001"  # the demo's Auto Scaling part runs with a fleet too
    assert summary["removed_from_groups"] == {"rsp-web80": sorted([scaled_in, *SPOTS]),
                                              "rsp-web8080": sorted([scaled_in, *SPOTS])}
    workers = {line.split("pid ")[1].split(")")[0] for line in proc.stderr.splitlines() if "workers started" in line}
    assert workers and len(next(iter(workers)).split(", ")) == 2
