"""`ecs-worker demo` (what `make run` runs): the whole product, end to end, in seconds."""
import json
import subprocess
import sys
import time


def test_demo_drains_the_burst_and_reports_what_it_did():
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "demo", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - started < 60
    summary = json.loads(proc.stdout)
    assert summary["drained"] and summary["worker_exit_code"] == 0
    assert summary["restarted"] == ["i-demoauto0000000001"]
    assert summary["not_restarted"] == ["i-demomanual00000001"]
    spot = ["i-demospot00000000001", "i-demospot00000000002", "i-demospot00000000003"]
    assert summary["removed_from_groups"] == {"rsp-web80": spot, "rsp-web8080": spot}
    assert [d["reason"] for d in summary["dead_letters"]] == ["invalid"]
    assert summary["events_by_outcome"]["invalid"] == 1
    assert summary["events_by_outcome"]["duplicate (skipped)"] == 1  # dedupe store at work
    # coalesced: one Remove call per group for the three interruptions (at most two each),
    # plus the maintenance scenario's one per group
    assert summary["api_calls"]["slb:RemoveVServerGroupBackendServers"] <= 4 + 2
    # scheduled maintenance avoided (out, reboot, back in) and a spot instance leaving an ALB group
    lines = summary["maintenance_and_alb"]
    assert "event e-demomaint000001 is now Avoided" in lines[0]
    assert "back in every group with the same ports and weights" in lines[0]
    assert "removed i-demospot00000000001 from ALB server group sgp-demoalb0001" in lines
    assert summary["api_calls"]["ecs:RebootInstance"] == 1
    assert "queue ecs-events" in proc.stderr  # progress while it runs
