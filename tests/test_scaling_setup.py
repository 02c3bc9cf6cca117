"""`setup` creates (or corrects) the lifecycle hooks of the scaling groups the config names, with
the worker's queue as their target, and prints the ESS RAM actions; `doctor` checks each hook's
target and timeout. Real subprocesses, real SDKs, against the emulator."""
from __future__ import annotations

import json

import pytest

from ecs_worker.testing import run_emulator
from runner_kit import connection_toml
from scaling_kit import ACCOUNT, fleet
from test_setup_doctor import cli, printed_policies

pytestmark = pytest.mark.slow


def world():
    state = fleet(groups=2, per_group=1)
    state["queues"] = []  # a new account: setup makes the queues, then the hooks that notify one
    state["scaling_groups"][0]["lifecycle_hooks"] = []
    # asg-1 already notifies the queue on scale-in, with the wrong timeout; its scale-out hook is elsewhere
    hooks = state["scaling_groups"][1]["lifecycle_hooks"]
    hooks[0].update(heartbeat_timeout=60, notification_arn=f"acs:ess:cn-hangzhou:{ACCOUNT}:queue/fleet-events")
    hooks[1].update(notification_arn=f"acs:ess:cn-hangzhou:{ACCOUNT}:queue/someone-else")
    return state


def write_config(tmp_path, emu):
    path = tmp_path / "config.toml"
    path.write_text(connection_toml(emu, emu.access_key_id, emu.access_key_secret, None, "fleet-events",
                                    "fleet-events-dlq") + f"""[worker]
state_dir = "{tmp_path / 'state'}"
[plugins]
disabled = ["log", "webhook", "slb", "restart", "maintenance", "hello"]
[plugins.scaling]
scaling_groups = ["asg-0", "asg-1"]
hook_heartbeat_timeout = 300
""")
    return path


def hooks(emu):
    return {(g["id"], h["transition"]): h for g in emu.state()["ess"]["scaling_groups"] for h in g["hooks"]
            if h["name"].startswith("drain")}


def test_setup_creates_and_corrects_the_hooks_and_doctor_checks_them(tmp_path):
    with run_emulator(world()) as emu:
        config = write_config(tmp_path, emu)
        before = cli("doctor", "-c", str(config))
        assert before.returncode == 1
        assert "✗ lifecycle hook asg-0 SCALE_IN: none notifies acs:ess:cn-hangzhou:" in before.stdout
        assert "✗ lifecycle hook asg-1 SCALE_IN: drain-1 notifies the queue, timeout 60s, not 300s" in before.stdout
        assert "(targets: acs:ess:cn-hangzhou:1690000000000000:queue/someone-else)" in before.stdout
        dry = cli("setup", "--dry-run", "-c", str(config))
        calls = [line.split()[3] for line in dry.stdout.splitlines() if line.startswith("would call: ESS")]
        assert sorted(calls) == ["CreateLifecycleHook"] * 3 + ["ModifyLifecycleHook"], dry.stdout
        assert hooks(emu)[("asg-1", "SCALE_IN")]["heartbeat_timeout"] == 60  # a dry run changes nothing

        done = cli("setup", "-c", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        made = [(g["id"], h) for g in emu.state()["ess"]["scaling_groups"] for h in g["hooks"]]
        ours = {(g, h["transition"]): h["heartbeat_timeout"] for g, h in made
                if (h["notification_arn"] or "").endswith(":queue/fleet-events")}
        assert ours == {(g, t): 300 for g in ("asg-0", "asg-1") for t in ("SCALE_IN", "SCALE_OUT")}
        assert sum(1 for _, h in made if (h["notification_arn"] or "").endswith("someone-else")) == 1  # left alone
        worker_doc, admin_doc = printed_policies(done.stdout)
        assert {"ess:CompleteLifecycleAction", "ess:RecordLifecycleActionHeartbeat",
                "ess:DescribeLifecycleActions"} <= set(json.dumps(worker_doc).replace('"', " ").split())
        assert "ess:CreateLifecycleHook" in json.dumps(admin_doc) and "ess:CreateLifecycleHook" not in json.dumps(worker_doc)

        again = cli("setup", "-c", str(config))
        assert "nothing changed" in again.stdout and "call: ESS" not in again.stdout
        doctor = cli("doctor", "-c", str(config))
        assert doctor.returncode == 0, doctor.stdout
        assert doctor.stdout.count("✓ lifecycle hook ") == 4 and "timeout 300s" in doctor.stdout
