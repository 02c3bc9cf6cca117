"""A lifecycle hook in real worker processes: the worker handling it is killed (SIGKILL) while
another plugin taking the hook is still working; a second worker, on another host (its own
state dir), finishes it — the instances out of every load balancer, the action completed once."""
from __future__ import annotations

import signal

import pytest

from ecs_worker.testing import run_emulator
from runner_kit import QUEUE, Worker, depth, wait_until
from scaling_kit import actions, fleet, memberships

pytestmark = pytest.mark.slow

FLUSH = '''
import os, time
from ecs_worker import hookimpl

@hookimpl
def on_lifecycle_hook(event, ctx):
    if os.environ.get("FLUSH_HANGS") == "1":
        time.sleep(60)  # this host dies before it finishes
    return "caches flushed"
'''


def config(tmp_path, emu, host: str):
    plugin = tmp_path / "flush.py"
    plugin.write_text(FLUSH)
    path = tmp_path / f"{host}.toml"
    path.write_text(f"""
[mns]
endpoint = "{emu.mns_endpoint}"
queue = "{QUEUE}"
wait_seconds = 1
visibility_timeout = 10
[cloud]
endpoint = "{emu.endpoint}"
protocol = "http"
region = "cn-hangzhou"
[credentials]
access_key_id = "{emu.access_key_id}"
access_key_secret = "{emu.access_key_secret}"
[worker]
state_dir = "{tmp_path / host}"
max_attempts = 3
retry_base_seconds = 1
retry_max_seconds = 2
[plugins]
load = ["{plugin}"]
disabled = ["hello", "restart", "slb", "maintenance", "webhook"]
call_timeout = 90
[plugins.scaling]
coalesce_ms = 50
""")
    return path


def test_a_worker_killed_mid_hook_is_finished_by_another(tmp_path):
    with run_emulator(fleet(groups=1, per_group=3, visibility_timeout=10)) as emu:  # back 10 s after the kill
        emu.scale_in("asg-0", ["i-asg0n00", "i-asg0n01"])
        first = Worker(config(tmp_path, emu, "host-a"), env={"FLUSH_HANGS": "1"})
        try:
            wait_until(lambda: not memberships(emu, "i-asg0n00") and not memberships(emu, "i-asg0n01"),
                       timeout=30, message="both instances out of every group")
            first.signal(signal.SIGKILL)  # the flush plugin is still working
            first.wait(10)
        finally:
            first.stop()
        (action,) = actions(emu)
        assert action["status"] == "Pending"  # nobody completed it: ESS still waits

        second = Worker(config(tmp_path, emu, "host-b"))
        try:
            wait_until(lambda: actions(emu)[0]["status"] == "Completed", timeout=30, message="the action completed")
            wait_until(lambda: sum(depth(emu).values()) == 0, timeout=30, message="the message settled")
        finally:
            second.signal(signal.SIGTERM)
            second.wait(30)
            second.stop()
        (action,) = actions(emu)
        assert action["result"] == "CONTINUE"
        assert action["members_at_end"] == {"i-asg0n00": [], "i-asg0n01": []}
        assert emu.state()["calls"]["ess:CompleteLifecycleAction"] == 1
        assert "completed CONTINUE" in second.output()
        assert memberships(emu, "i-asg0n02")  # the instance that stays was never touched
