"""`doctor --probe`: a marked test event sent with CloudMonitor's SendDryRunSystemEvent, watched
for with BatchPeekMessage or in a running worker's record — against the emulator, which models
both APIs (and, by default, the stricter reading: test events do not reach rule targets)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ecs_worker.emulator import default_state
from ecs_worker.operations.ram_policy import setup_policy, worker_policy
from ecs_worker.testing import acs_client, run_emulator

from runner_kit import Worker, connection_toml, free_port, wait_until

PLUGIN = '''
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    with open({record!r}, "a") as f:
        f.write(event.name + "\\n")
    return "recorded"
'''


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ecs_worker", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def make_config(tmp_path, emu, metrics: str = "") -> tuple:
    record = tmp_path / "record.txt"
    plugin = tmp_path / "recorder.py"
    plugin.write_text(PLUGIN.format(record=str(record)))
    path = tmp_path / "config.toml"
    path.write_text(connection_toml(emu, emu.access_key_id, emu.access_key_secret, None, "probe-events") + f"""[worker]
state_dir = "{tmp_path / 'state'}"
shutdown_timeout = 5
[plugins]
load = ["{plugin}"]
disabled = ["hello", "webhook"]
[metrics]
listen = "{metrics}"
""")
    setup = cli("setup", "-c", path)
    assert setup.returncode == 0, setup.stderr
    return path, record, setup.stdout


def account(reach: bool) -> dict:
    state = default_state()
    state["queues"] = []
    state["dry_run_events_reach_targets"] = reach
    return state


def test_the_probe_is_seen_in_the_queue_and_consumes_nothing(tmp_path):
    with run_emulator(account(reach=True)) as emu:
        config, _, _ = make_config(tmp_path, emu)
        proc = cli("doctor", "-c", config, "--probe", "--probe-wait", "10")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        line = next(x for x in proc.stdout.splitlines() if "probe:" in x)
        assert line.startswith("✓ probe: a test Instance:StateChange event sent through CloudMonitor reached "
                               "queue probe-events (seen by BatchPeekMessage"), proc.stdout
        assert emu.state()["queues"]["probe-events"] == {"visible": 1, "in_flight": 0, "delayed": 0}  # peeked only
        assert emu.state()["calls"].get("mns:BatchReceiveMessage", 0) == 0


def test_a_running_worker_records_the_probe_and_no_plugin_sees_it(tmp_path):
    with run_emulator(account(reach=True)) as emu:
        port = free_port()
        config, record, _ = make_config(tmp_path, emu, metrics=f"127.0.0.1:{port}")
        worker = Worker(config)
        try:
            wait_until(lambda: emu.state()["calls"].get("mns:BatchReceiveMessage", 0) > 0, 30,
                       message="the worker polling")
            proc = cli("doctor", "-c", config, "--probe", "--probe-wait", "15")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "✓ probe: a test Instance:StateChange event sent through CloudMonitor reached the running " \
                   "worker (its /probes record)" in proc.stdout, proc.stdout
            wait_until(lambda: emu.state()["queues"]["probe-events"]["visible"] == 0
                       and emu.state()["queues"]["probe-events"]["in_flight"] == 0, 10, message="the probe deleted")
            assert not record.exists(), record.read_text()  # no plugin was shown it
        finally:
            worker.signal()
            assert worker.wait(30) == 0
        assert "probe " in worker.output() and "acting on nothing" in worker.output()


def test_a_probe_that_does_not_arrive_is_not_proven_not_failed(tmp_path):
    with run_emulator(account(reach=False)) as emu:  # Alibaba documents no delivery: the default
        config, _, printed = make_config(tmp_path, emu)
        admin = json.loads(printed[printed.rindex("\n{") + 1:])  # the operator's policy, printed last
        assert {"cms:SendDryRunSystemEvent", "mns:PeekMessage", "mns:BatchPeekMessage"} <= {
            a for st in admin["Statement"] for a in st["Action"]}
        proc = cli("doctor", "-c", config, "--probe", "--probe-wait", "1")
        assert proc.returncode == 0, proc.stdout
        assert "– probe: not proven: the test Instance:StateChange event" in proc.stdout
        assert "Alibaba does not document" in proc.stdout
        assert emu.state()["calls"]["cms:SendDryRunSystemEvent"] == 1


def test_the_workers_keys_cannot_probe_and_the_operators_policy_can(tmp_path):
    with run_emulator(account(reach=True)) as emu:
        config, _, _ = make_config(tmp_path, emu)
        emu.set_ram_policy(worker_policy("probe-events", "", emu.region, "*"))
        proc = cli("doctor", "-c", config, "--probe", "--probe-wait", "1")
        assert "– probe: not sent: these credentials may not send test events (Forbidden.RAM)" in proc.stdout
        operator = setup_policy("probe-events", "", emu.region, "*")
        assert {"cms:SendDryRunSystemEvent", "mns:PeekMessage"} <= {
            a for st in operator["Statement"] for a in st["Action"]}
        emu.set_ram_policy(operator)
        proc = cli("doctor", "-c", config, "--probe", "--probe-wait", "10")
        assert "✓ probe:" in proc.stdout, proc.stdout


@pytest.mark.parametrize("params, code", [
    ({"Product": "ecs"}, "MissingParameter"),
    ({"Product": "ecs", "EventName": "Instance:StateChange", "EventContent": "[1]"}, "ParameterInvalid"),
])
def test_the_emulator_checks_send_dry_run_system_event(params, code):
    from aliyunsdkcms.request.v20190101.SendDryRunSystemEventRequest import SendDryRunSystemEventRequest
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    with run_emulator(account(reach=False)) as emu:
        request = SendDryRunSystemEventRequest()
        request.set_endpoint(emu.endpoint)
        for key, value in params.items():
            request.add_query_param(key, value)
        with pytest.raises(ServerException) as raised:
            acs_client(emu).do_action_with_exception(request)
        assert raised.value.get_error_code() == code
        ok = SendDryRunSystemEventRequest()
        ok.set_endpoint(emu.endpoint)
        ok.set_Product("ecs")
        ok.set_EventName("Instance:StateChange")
        assert json.loads(acs_client(emu).do_action_with_exception(ok))["Success"] in (True, "true")
