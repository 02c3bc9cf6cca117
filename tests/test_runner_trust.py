"""The queue is an input, not a friend (issue 17, items 1 and 5): bodies shaped like a
re-sent deferral, sent by anyone allowed to write to the queue, against real worker
processes. Forged or unsigned state is never acted on; a signed sequence goes on on
another host; the original of a re-sent deferral, back after a lost delete, is not re-sent."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

import pytest

from ecs_worker.events.wrapper import wrap
from ecs_worker.trust.fleet_key import Signer
from ecs_worker.testing import run_emulator
from runner_kit import QUEUE, Worker, connection_toml, depth, wait_until
from test_runner_maintenance import IID, IN, KEY, body, groups, world

pytestmark = pytest.mark.slow

FLEET_KEY = "f" * 64
ATTACKER = [{"kind": "clb", "group": "rsp-web80", "server_id": "i-attacker", "port": 80, "weight": 100},
            {"kind": "clb", "group": "rsp-web80", "server_id": IID, "port": 80, "weight": 0}]


def key_file(tmp_path, text: str = FLEET_KEY):
    path = tmp_path / "fleet.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (text + "\n").encode())
    os.close(fd)
    return path


def config(tmp_path, emu, name: str, signing_key=None, metrics_port=None):
    path = tmp_path / f"{name}.toml"
    worker = f'signing_key_file = "{signing_key}"\n' if signing_key else ""
    metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
    path.write_text(connection_toml(emu, KEY["access_key_id"], KEY["access_key_secret"]) + f"""[worker]
state_dir = "{tmp_path / name}"
max_attempts = 3
retry_base_seconds = 1
retry_max_seconds = 2
{worker}[guard]
keep_healthy = 0  # this world's ALB/NLB groups have one member: the guard would keep it in
[plugins]
disabled = ["hello", "restart", "slb", "webhook"]
[plugins.maintenance]
poll_seconds = 1
{metrics}""")
    return path


def wrapper(not_before: float, step: str, members: list, signer=None, key: str = "evt-rm1|x|Scheduled") -> str:
    now = time.time()
    state = {"maintenance": now, "~state": {"maintenance": {"step": step, "members": members}}}
    return wrap(body(not_before).encode(), key, state, 0, now, now, signer=signer).body


def legacy_wrapper(not_before: float) -> str:
    """What today's main re-sends mid-maintenance (unsigned, the state inside)."""
    now = time.time()
    members = [{"kind": "clb", "group": "rsp-web80", "server_id": IID, "port": 80, "weight": 70}]
    meta = {"key": "evt-rm1|x|Scheduled", "attempts": 0, "since": now, "until": now,
            "resume": {"maintenance": now, "~state": {"maintenance": {"step": "drained", "members": members}}}}
    return json.dumps({"ecs_worker_deferred": meta, "body": body(not_before)})


def dead_letters(tmp_path, name: str) -> list[dict]:
    path = tmp_path / name / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_forged_and_unsigned_wrappers_are_dead_lettered_and_never_acted_on(tmp_path):
    nb = time.time() + 2 * 3600
    port = free_port()
    with run_emulator(world(nb)) as emu:
        emu.send(QUEUE, wrapper(nb, "restore", ATTACKER, Signer(["a" * 64])))  # a key not the fleet's
        emu.send(QUEUE, legacy_wrapper(nb))  # unsigned: an older version's, or anyone's
        doc = json.loads(wrapper(nb, "restore", ATTACKER, Signer([FLEET_KEY])))
        doc["ecs_worker_deferred"]["~note"] = 1  # a signed wrapper, changed after signing
        emu.send(QUEUE, json.dumps(doc))
        worker = Worker(config(tmp_path, emu, "host-a", key_file(tmp_path), port))
        try:
            wait_until(lambda: len(dead_letters(tmp_path, "host-a")) == 3, 30, message="three dead letters")
            wait_until(lambda: sum(depth(emu).values()) == 0, 15, message="all three deleted")
            scraped = _get(port, "/metrics")
        finally:
            worker.finish(30)
        records = dead_letters(tmp_path, "host-a")
        assert sorted(r["reason"] for r in records) == ["forged", "forged", "unsigned"]
        unsigned = next(r for r in records if r["reason"] == "unsigned")
        assert "rsp-web80" in unsigned["error"] and IID in unsigned["error"]  # what to check is named
        assert groups(emu) == IN  # nothing added, removed or reweighed
        calls = emu.state()["calls"]
        assert not [c for c in calls if c.startswith(("slb:", "alb:", "nlb:")) and "Describe" not in c
                    and "List" not in c and "Get" not in c]
        assert "ecs:RebootInstance" not in calls
        assert 'ecs_worker_dead_letters_total{reason="forged"} 2.0' in scraped
        assert 'ecs_worker_dead_letters_total{reason="unsigned"} 1.0' in scraped


def test_a_signed_step_naming_another_instance_is_refused_by_the_plugin(tmp_path):
    nb = time.time() + 2 * 3600
    with run_emulator(world(nb)) as emu:
        emu.send(QUEUE, wrapper(nb, "restore", ATTACKER, Signer([FLEET_KEY])))
        worker = Worker(config(tmp_path, emu, "host-a", key_file(tmp_path)))
        try:
            wait_until(lambda: sum(depth(emu).values()) == 0, 30, message="settled without acting")
        finally:
            worker.finish(30)
        assert groups(emu) == IN
        assert "its memberships name i-attacker, not the event's instance" in worker.output()
        # the outcome line says why (ctx.skip), not a bare "-> ignored"
        assert "-> ignored (maintenance: maintenance of" in worker.output()
        assert "not acting on the resumed 'restore' step: its memberships name i-attacker" in worker.output()


def test_without_a_key_a_wrapper_state_is_not_believed_and_the_message_waits(tmp_path):
    nb = time.time() + 2 * 3600
    with run_emulator(world(nb)) as emu:
        emu.send(QUEUE, wrapper(nb, "restore", ATTACKER))
        worker = Worker(config(tmp_path, emu, "host-a"))
        try:
            wait_until(lambda: "is not in this worker's store" in worker.output(), 30, message="the refusal")
            time.sleep(1)
            assert depth(emu)["in_flight"] == 1  # waiting, not dropped
        finally:
            worker.finish(30)
        assert groups(emu) == IN
        assert not dead_letters(tmp_path, "host-a")
        assert "no signing key" in worker.output() and "more than one worker shares the queue" in worker.output()


def test_a_signed_sequence_goes_on_on_another_host_without_a_second_reboot(tmp_path):
    """Each host its own store: only the signed message carries the memberships over."""
    nb = time.time() + 2 * 3600
    key = key_file(tmp_path)
    state = world(nb)
    state["start_delay_seconds"] = state["stop_delay_seconds"] = 1  # long enough to kill it while rebooting
    with run_emulator(state) as emu:
        emu.send(QUEUE, body(nb))
        first = Worker(config(tmp_path, emu, "host-a", key))
        try:
            wait_until(lambda: groups(emu) == (set(), set(), set())
                       and emu.state()["calls"].get("ecs:RebootInstance") == 1,
                       timeout=60, message="out of every group and rebooting")
            first.signal(signal.SIGKILL)
            first.wait(10)
        finally:
            first.stop()
        second = Worker(config(tmp_path, emu, "host-b", key))
        try:
            wait_until(lambda: groups(emu) == IN, timeout=60, message="restored by the other host")
            wait_until(lambda: sum(depth(emu).values()) == 0, timeout=30, message="settled")
        finally:
            second.finish(30)
        assert emu.state()["calls"].get("ecs:RebootInstance") == 1


def _get(port: int, path: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return answer.read().decode()


# A plugin that defers every event every time it is called, for two minutes.
ALWAYS_DEFERS = '''
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    ctx.defer(120, "always later")
    return "deferred"
'''


def test_a_re_sent_deferral_replaces_its_original_once_even_when_the_delete_is_lost(tmp_path):
    from runner_kit import Setup, emulator_state, event_body

    with run_emulator(emulator_state(visibility_timeout=3)) as emu:
        setup = Setup(tmp_path, emu)
        plugin = tmp_path / "always_defers.py"
        plugin.write_text(ALWAYS_DEFERS)
        emu.set_faults({"mns": {"error_rate": 1.0, "actions": ["BatchDeleteMessage", "DeleteMessage"]}})
        emu.send(QUEUE, event_body("lost-delete"))
        worker = Worker(setup.config(plugins__load=[str(plugin)], worker__resend_deferrals_after=60))
        try:
            wait_until(lambda: emu.state()["calls"].get("mns:SendMessage", 0) >= 1, 15, message="the re-send")
            # Its delete failed: the original comes back (3 s), and is recognised each time.
            wait_until(lambda: "already settled: deleting the redelivered copy" in worker.output(), 20,
                       message="the original back, recognised")
            emu.set_faults({"mns": {}})
            wait_until(lambda: depth(emu) == {"visible": 0, "in_flight": 0, "delayed": 1}, 20,
                       message="the original deleted, the copy waiting")
        finally:
            worker.finish(30)
        assert emu.state()["calls"]["mns:SendMessage"] == 1  # one re-send, however often the original came back


def test_a_worker_killed_during_reboot_instance_does_not_reboot_again(tmp_path):
    """The O&M event's status says whether the reboot happened (Avoided once the owner
    rebooted before notBefore): the resumed step reads it instead of rebooting again."""
    nb = time.time() + 2 * 3600
    state = world(nb)
    state["start_delay_seconds"] = state["stop_delay_seconds"] = 0.2
    with run_emulator(state) as emu:
        emu.set_faults({"ecs": {"latency_ms": 1000, "actions": ["RebootInstance"]}})
        emu.send(QUEUE, body(nb))
        first = Worker(config(tmp_path, emu, "host-a"))
        try:
            wait_until(lambda: emu.state()["calls"].get("ecs:RebootInstance") == 1, 60,
                       message="the reboot call under way")
            first.signal(signal.SIGKILL)  # while the call is in flight
            first.wait(10)
        finally:
            first.stop()
        emu.set_faults({"ecs": {}})
        second = Worker(config(tmp_path, emu, "host-a"))
        try:
            wait_until(lambda: groups(emu) == IN, timeout=60, message="restored after the one reboot")
            wait_until(lambda: sum(depth(emu).values()) == 0, timeout=30, message="settled")
        finally:
            second.finish(30)
        assert emu.state()["calls"].get("ecs:RebootInstance") == 1
        assert "the event is Avoided: not rebooting again" in second.output()
