"""A permanent RAM denial is not retried forever (issue 18), under either reading of MNS's RAM names:
before the worker is ready a refused receive or delete exits 2 naming the action(s); once it is
ready, /healthz turns 503 naming them while the worker backs off, and recovers when granted."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ecs_worker.cloud.apis import ram_text
from ecs_worker.emulator.ram import MNS_READINGS
from ecs_worker.operations.ram_policy import worker_policy
from runner_kit import QUEUE, Setup, Worker, emulator_state as kit_state, event_body, wait_until
from test_health import free_port, get

SHIPPED = json.loads((Path(__file__).resolve().parents[1] / "deploy" / "ram-policy.json").read_text())


@pytest.fixture
def emulator_state():
    return kit_state()


def _denying(action: str) -> dict:
    policy = copy.deepcopy(SHIPPED)
    policy["Statement"].append({"Effect": "Deny", "Action": action, "Resource": "*"})
    return policy


@pytest.mark.parametrize("api, reading", [("BatchReceiveMessage", "table"), ("BatchDeleteMessage", "api")])
def test_a_refused_receive_or_delete_before_ready_exits_2_naming_both_readings(emulator, tmp_path, api, reading):
    emulator.set_mns_ram_reading(reading)
    emulator.set_ram_policy(_denying("mns:" + MNS_READINGS[reading].get(api, api)))
    worker = Worker(Setup(tmp_path, emulator).config())
    try:
        assert worker.wait(30) == 2, worker.output()
    finally:
        worker.stop()
    assert f"the RAM policy must allow {ram_text('mns', api)} on acs:mns:*:*:/queues/{QUEUE}/messages" \
        in worker.output()
    assert " and " in ram_text("mns", api)  # both names, whichever the service checks


def test_a_refused_receive_after_ready_turns_healthz_503_naming_it_then_recovers(emulator, tmp_path):
    emulator.set_mns_ram_reading("table")
    emulator.set_ram_policy(worker_policy(QUEUE, "", emulator.region))
    port = free_port()
    setup = Setup(tmp_path, emulator)
    worker = Worker(setup.config(metrics__listen=f"127.0.0.1:{port}"))
    try:
        emulator.send(QUEUE, event_body("d-1"))
        wait_until(lambda: setup.lines() == ["d-1"], 20, message="the first event handled")
        assert get(port, "/healthz")[0] == 200
        emulator.set_ram_policy(_denying("mns:ReceiveMessage"))
        wait_until(lambda: get(port, "/healthz")[0] == 503, 20, interval=0.3, message="/healthz 503")
        status, body = get(port, "/healthz")
        assert body["status"] == "denied" and ram_text("mns", "BatchReceiveMessage") in body["denied"]["receive"]
        assert worker.alive()  # backing off, not exiting: an operator can fix the policy live
        emulator.set_ram_policy(worker_policy(QUEUE, "", emulator.region))
        wait_until(lambda: get(port, "/healthz")[0] == 200, 40, interval=0.5, message="/healthz to recover")
        emulator.send(QUEUE, event_body("d-2"))
        wait_until(lambda: setup.lines() == ["d-1", "d-2"], 20, message="events flow again")
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()


@pytest.mark.parametrize("reading", ["api", "table"])
def test_doctor_proves_the_delete_permission_and_names_a_refusal_under_either_reading(emulator, tmp_path, reading):
    import io

    from ecs_worker.config import parse_config
    from ecs_worker.operations.doctor import Doctor
    from ecs_worker.plugin_host.manager import load_plugins

    config = parse_config({
        "mns": {"endpoint": emulator.mns_endpoint, "queue": QUEUE, "dead_letter_queue": ""},
        "cloud": {"region": emulator.region, "endpoint": emulator.endpoint, "protocol": "http"},
        "credentials": {"access_key_id": emulator.access_key_id, "access_key_secret": emulator.access_key_secret},
        "worker": {"state_dir": str(tmp_path)}, "plugins": {"disabled": ["hello"]}})
    plugins = load_plugins(config, entry_points_too=False)
    emulator.set_mns_ram_reading(reading)
    emulator.set_ram_policy(worker_policy(QUEUE, "", emulator.region))
    passed = [c.text for c in Doctor(config, plugins).permissions() if c.mark == "✓"]
    assert any(t.startswith("mns:DeleteMessage and mns:BatchDeleteMessage: permitted (a receipt handle of no "
                            "message") for t in passed), passed
    emulator.set_ram_policy(_denying("mns:" + MNS_READINGS[reading].get("BatchDeleteMessage", "BatchDeleteMessage")))
    out = io.StringIO()
    assert Doctor(config, plugins, out=out).run() == 1
    assert "✗ mns:DeleteMessage and mns:BatchDeleteMessage: AccessDenied" in out.getvalue()
    assert "fix: grant mns:DeleteMessage and mns:BatchDeleteMessage" in out.getvalue()
