"""State-file validation and the emulator as a process (`python -m ecs_worker.emulator`)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mns.queue import Message

from ecs_worker.emulator import StateError, default_state, validate
from ecs_worker.emulator.cli import build_parser, main
from ecs_worker.testing import mns_queue


def error_of(mutate) -> str:
    state = default_state()
    mutate(state)
    with pytest.raises(StateError) as exc:
        validate(state, source="state.json")
    return str(exc.value)


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s["instances"][2].update(status="Sleeping"),
     "state.json: instances[2].status: must be one of Pending, Starting, Running, Stopping, Stopped"),
    (lambda s: s.pop("region"), "state.json: region: is required"),
    (lambda s: s.update(credentials=[]), "state.json: credentials: must not be empty"),
    (lambda s: s["queues"][1].update(visibility_timeout=0), "state.json: queues[1].visibility_timeout: must be between"),
    (lambda s: s["queues"].append({"name": "ecs-events"}), "state.json: queues[2].name: duplicate 'ecs-events'"),
    (lambda s: s["load_balancers"][0]["vserver_groups"][0]["backend_servers"][1].update(port="80"),
     "state.json: load_balancers[0].vserver_groups[0].backend_servers[1].port: must be an integer"),
    (lambda s: s["faults"]["ecs"].update(error_rate=1.5), "state.json: faults.ecs.error_rate: must be between"),
    (lambda s: s["faults"].update(rds={}), "state.json: faults.rds: unknown key"),
    (lambda s: s["instances"][0].update(tag={}), "state.json: instances[0].tag: unknown key"),
])
def test_validation_names_the_key_path(mutate, expected):
    message = error_of(mutate)
    assert message.startswith(expected)
    assert "\n" not in message


def test_defaults_and_optional_keys():
    state = default_state()
    state["credentials"][0]["security_token"] = "tok"
    state["instances"][0]["locks"] = ["Recycling"]
    state["start_delay_seconds"] = 0
    out = validate(state)
    assert out["queues"][0]["delay_seconds"] == 0 and out["queues"][0]["maximum_message_size"] == 65536
    assert out["instances"][0]["locks"] == ["Recycling"] and out["instances"][2]["spot"] is True
    assert out["credentials"][0]["security_token"] == "tok"
    assert out["start_delay_seconds"] == 0.0 and out["stop_delay_seconds"] == 1.0


def run_cli(*args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecs_worker.emulator", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_malformed_state_file_exits_2_with_one_line(tmp_path: Path):
    state = default_state()
    state["instances"][2]["status"] = "Asleep"
    bad = tmp_path / "state.json"
    bad.write_text(json.dumps(state))
    proc = run_cli("--state", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "state.json: instances[2].status: must be one of" in lines[0]

    bad.write_text("{not json")
    proc = run_cli("--state", str(bad))
    assert proc.returncode == 2 and "state.json: invalid JSON at line 1" in proc.stderr

    proc = run_cli("--state", str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_main_returns_2_in_process(tmp_path: Path, capsys):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"region": "cn-hangzhou"}))
    assert main(build_parser().parse_args(["--state", str(bad)])) == 2
    assert "s.json: account_id: is required" in capsys.readouterr().err


class _Info:
    def __init__(self, info: dict):
        self.__dict__.update(info)


def test_process_serves_writes_ready_file_and_stops_on_sigterm(tmp_path: Path):
    state = default_state()
    state["queues"][0]["messages"] = ["seeded"]
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    ready = tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    proc = subprocess.Popen([sys.executable, "-m", "ecs_worker.emulator", "--state", str(state_file),
                             "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["endpoint"].startswith("127.0.0.1:") and info["region"] == "cn-hangzhou"
        assert json.loads(proc.stdout.readline()) == info
        q = mns_queue(_Info(info), "ecs-events")
        assert q.receive_message(0).message_body == "seeded"
        q.send_message(Message("x"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_emulator_api():
    import re

    from ecs_worker.testing import run_emulator

    with run_emulator() as emu:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", emu.endpoint)
        assert emu.mns_endpoint == f"http://{emu.endpoint}"
        assert (emu.region, emu.access_key_id, emu.access_key_secret) == (
            "cn-hangzhou", "LTAIexampleKey0001", "example-secret-0001")
        message_id = emu.send("ecs-events", b'{"x": 1}')
        assert message_id and emu.state()["queues"]["ecs-events"]["visible"] == 1
        assert emu.state()["calls"] == {}  # .send is not an API call
        assert mns_queue(emu, "ecs-events").receive_message(0).message_id == message_id
