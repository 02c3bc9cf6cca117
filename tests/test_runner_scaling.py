"""A lifecycle hook in real worker processes: the worker handling it is killed (SIGKILL) while
another plugin taking the hook is still working; a second worker, on another host (its own
state dir), finishes it — the instances out of every load balancer, the action completed once.
And a hook held open by heartbeats (its state re-sent with the message) runs to completion with
a fleet key (the state signed, in the message) and without one (the state kept in the store)."""
from __future__ import annotations

import os
import signal

import pytest

from ecs_worker.testing import run_emulator
from runner_kit import Worker, connection_toml, depth, wait_until
from scaling_kit import actions, fleet, memberships

pytestmark = pytest.mark.slow

FLUSH = '''
import os, time
from ecs_worker import hookimpl

@hookimpl
def on_lifecycle_hook(event, ctx):
    if os.environ.get("FLUSH_HANGS") == "1":
        time.sleep(60)  # this host dies before it finishes
    waited = time.time() - ctx.deferred_since if ctx.deferred_since is not None else 0.0
    work = float(os.environ.get("FLUSH_SECONDS", "0"))
    if waited < work:  # still working: come back (the scaling plugin heartbeats meanwhile)
        ctx.defer(0.5, "flushing caches")
        return None
    return "caches flushed"
'''


def config(tmp_path, emu, host: str, worker: str = "", scaling: str = ""):
    plugin = tmp_path / "flush.py"
    plugin.write_text(FLUSH)
    path = tmp_path / f"{host}.toml"
    path.write_text(connection_toml(emu, emu.access_key_id, emu.access_key_secret) + f"""[worker]
state_dir = "{tmp_path / host}"
max_attempts = 3
retry_base_seconds = 1
retry_max_seconds = 2
{worker}
[plugins]
load = ["{plugin}"]
disabled = ["hello", "restart", "slb", "maintenance", "webhook"]
call_timeout = 90
[plugins.scaling]
coalesce_ms = 50
{scaling}
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
            second.finish(30)
        (action,) = actions(emu)
        assert action["result"] == "CONTINUE"
        assert action["members_at_end"] == {"i-asg0n00": [], "i-asg0n01": []}
        assert emu.state()["calls"]["ess:CompleteLifecycleAction"] == 1
        assert "completed CONTINUE" in second.output()
        assert memberships(emu, "i-asg0n02")  # the instance that stays was never touched


@pytest.mark.parametrize("signed", [True, False], ids=["fleet-key", "no-key"])
def test_a_hook_held_by_heartbeats_keeps_its_state_with_and_without_a_signing_key(tmp_path, signed):
    worker = ""
    if signed:
        key = tmp_path / "fleet.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("k" * 64 + "\n")
        worker = f'signing_key_file = "{key}"'
    with run_emulator(fleet(groups=1, per_group=2)) as emu:
        emu.scale_in("asg-0", ["i-asg0n00"])
        path = config(tmp_path, emu, "host-a", worker=worker, scaling="heartbeat_seconds = 0.5\nmax_hold_minutes = 0.05")
        one = Worker(path, env={"FLUSH_SECONDS": "8"})
        try:
            wait_until(lambda: actions(emu)[0]["status"] == "Completed", timeout=40, message="the action completed")
            wait_until(lambda: sum(depth(emu).values()) == 0, timeout=30, message="the message settled")
        finally:
            one.finish(30)
        out = one.output()
        (action,) = actions(emu)
        assert action["result"] == "CONTINUE"
        assert action["members_at_end"] == {"i-asg0n00": []}
        # the state came back each time (signed in the message, or from the store): the hold began
        # at the first delivery, so after 3 s (max_hold_minutes) the scale-in is no longer held
        assert "completed CONTINUE: held 0.05 min while flush still working" in out, out[-3000:]
        assert "every plugin taking the hook is done" not in out
        assert emu.state()["calls"]["ess:RecordLifecycleActionHeartbeat"] >= 2
        assert emu.state()["calls"]["ess:CompleteLifecycleAction"] == 1
        assert "forged" not in out and "unsigned" not in out and "not in this worker's store" not in out
        assert ("no signing key" in out) is not signed
        assert "re-sent as" in out  # the state travelled (signed) or was named (no key) in a re-sent copy
