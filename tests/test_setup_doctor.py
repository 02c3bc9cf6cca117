"""`setup` and `doctor` end to end against the emulator, as real subprocesses with the real SDKs:
an empty account -> setup -> doctor all ✓ -> an instance stopped in the emulator reaches a plugin
through the CloudMonitor rule."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ecs_worker.emulator import default_state
from ecs_worker.operations.ram_policy import worker_policy

from runner_kit import Worker, wait_until

WEB1 = "i-bp1web000000000001"
PLUGIN = '''
import json
from ecs_worker import hookimpl

@hookimpl
def on_state_change(event, ctx):
    with open({record!r}, "a") as f:
        f.write(json.dumps([event.name, event.instance_id, event.state]) + "\\n")
    return "recorded " + event.state
'''


@pytest.fixture
def emulator_state():
    state = default_state()
    state["queues"] = []  # a new account: no queues, no rules
    state["stop_delay_seconds"] = 0.3
    return state


@pytest.fixture
def config(tmp_path, emulator):
    record = tmp_path / "record.jsonl"
    plugin = tmp_path / "recorder.py"
    plugin.write_text(PLUGIN.format(record=str(record)))
    path = tmp_path / "config.toml"
    path.write_text(f"""
[mns]
endpoint = "{emulator.mns_endpoint}"
queue = "fleet-events"
dead_letter_queue = "fleet-events-dlq"
wait_seconds = 1
visibility_timeout = 30

[cloud]
region = "{emulator.region}"
endpoint = "{emulator.endpoint}"
protocol = "http"

[credentials]
access_key_id = "{emulator.access_key_id}"
access_key_secret = "{emulator.access_key_secret}"

[worker]
state_dir = "{tmp_path / 'state'}"
shutdown_timeout = 5

[plugins]
load = ["{plugin}"]
disabled = ["log", "webhook", "slb", "restart", "hello"]
""")
    return path


def _list(value):
    return [value] if isinstance(value, str) else value


def printed_policies(stdout: str) -> list[dict]:
    """The JSON documents `setup` printed (the worker's policy, then the administrator's)."""
    docs, decoder, i = [], json.JSONDecoder(), 0
    while (i := stdout.find("\n{", i)) != -1:
        doc, end = decoder.raw_decode(stdout, i + 1)
        docs.append(doc)
        i = end
    return docs


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecs_worker", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_empty_account_to_events_flowing(emulator, config):
    # Before setup, doctor says what is missing, with the fix, and exits 1.
    before = cli("doctor", "-c", str(config))
    assert before.returncode == 1, before.stdout + before.stderr
    assert "✗ queue fleet-events" in before.stdout and "ecs-worker setup" in before.stdout
    assert "✗ event rule ecs-worker-fleet-events: does not exist" in before.stdout

    # --dry-run prints every call and changes nothing.
    dry = cli("setup", "--dry-run", "-c", str(config))
    assert dry.returncode == 0, dry.stderr
    calls = [line for line in dry.stdout.splitlines() if line.startswith("would call: ")]
    assert [c.split()[2:4] for c in calls] == [["MNS", "CreateQueue"], ["MNS", "CreateQueue"],
                                              ["CMS", "PutEventRule"], ["CMS", "PutEventRuleTargets"]]
    assert "NameList" in calls[2] and "Instance:StateChange" in calls[2]  # only what the plugin needs
    assert emulator.state()["queues"] == {} and emulator.state()["event_rules"] == []

    done = cli("setup", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 4 change(s) made" in done.stdout
    assert set(emulator.state()["queues"]) == {"fleet-events", "fleet-events-dlq"}
    (rule,) = emulator.state()["event_rules"]
    assert rule["patterns"] == [{"product": "ecs", "names": ["Instance:StateChange"]}]
    assert [t["queue"] for t in rule["targets"]] == ["fleet-events"]

    again = cli("setup", "-c", str(config))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert "call: " not in again.stdout
    worker_doc, admin_doc = printed_policies(again.stdout)
    mns_resources = {r for st in worker_doc["Statement"] for r in _list(st["Resource"]) if r.startswith("acs:mns")}
    assert mns_resources >= {f"acs:mns:{emulator.region}:*:/queues/fleet-events/messages",
                             f"acs:mns:{emulator.region}:*:/queues/fleet-events-dlq/messages"}
    assert not any("/queues/ecs-events" in r for r in mns_resources)
    assert "mns:CreateQueue" in json.dumps(admin_doc) and "mns:CreateQueue" not in json.dumps(worker_doc)

    doctor = cli("doctor", "-c", str(config))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    marks = [line[0] for line in doctor.stdout.splitlines() if line and line[0] in "✓✗–"]
    assert marks.count("✗") == 0 and marks.count("✓") >= 8, doctor.stdout
    assert "ecs:StartInstance: permitted" in doctor.stdout and "DryRunOperation" in doctor.stdout
    assert "SLB writes" in doctor.stdout and "not provable" in doctor.stdout

    # The loop: the worker runs, an operator stops an instance, the event reaches the plugin.
    worker = Worker(config)
    try:
        wait_until(lambda: emulator.state()["calls"].get("mns:BatchReceiveMessage", 0) > 0, 30,
                   message="the worker polling")
        from aliyunsdkecs.request.v20140526.StopInstanceRequest import StopInstanceRequest

        from ecs_worker.testing import acs_client
        stop = StopInstanceRequest()
        stop.set_InstanceId(WEB1)
        stop.set_endpoint(emulator.endpoint)
        stop.set_protocol_type("http")
        acs_client(emulator).do_action_with_exception(stop)

        record = config.parent / "record.jsonl"

        def seen():
            return [json.loads(x) for x in record.read_text().splitlines()] if record.exists() else []
        wait_until(lambda: len(seen()) >= 2, 30, message="Stopping and Stopped reaching the plugin")
        assert seen() == [["Instance:StateChange", WEB1, "Stopping"], ["Instance:StateChange", WEB1, "Stopped"]]
    finally:
        worker.signal()
        assert worker.wait(30) == 0, worker.output()[-2000:]


def test_setup_repairs_what_drifted(emulator, config):
    assert cli("setup", "-c", str(config)).returncode == 0
    from ecs_worker.testing import mns_queue
    from mns.queue import QueueMeta
    mns_queue(emulator, "fleet-events").set_attributes(QueueMeta(vis_timeout=5))
    fixed = cli("setup", "-c", str(config))
    assert fixed.returncode == 0
    assert "call: MNS SetQueueAttributes fleet-events VisibilityTimeout=30 (was VisibilityTimeout=5)" in fixed.stdout
    assert "done: 1 change(s) made" in fixed.stdout


def test_doctor_and_setup_refuse_a_config_without_endpoint(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mns]\nqueue = \"q\"\n")
    for command in ("doctor", "setup"):
        proc = cli(command, "-c", str(cfg))
        assert proc.returncode == 2 and "[mns] endpoint" in proc.stderr


def test_doctor_reports_a_taken_metrics_address(emulator, config):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        config.write_text(config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        assert cli("setup", "-c", str(config)).returncode == 0
        proc = cli("doctor", "-c", str(config))
    assert proc.returncode == 1
    assert f"✗ metrics: cannot listen on 127.0.0.1:{port}" in proc.stdout


def test_printed_policy_names_the_configured_queues():
    doc = worker_policy("fleet", "fleet-dlq", "cn-shanghai", "123456")
    text = json.dumps(doc)
    assert json.loads(text) == doc and doc["Version"] == "1"
    resources = [r for s in doc["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                       else s["Resource"])]
    assert "acs:mns:cn-shanghai:123456:/queues/fleet/messages" in resources
    assert "acs:mns:cn-shanghai:123456:/queues/fleet-dlq" in resources
    assert not any("ecs-events" in r for r in resources)
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    assert {"mns:GetQueueAttributes", "ecs:StartInstance", "slb:RemoveVServerGroupBackendServers"} <= actions
    no_dlq = worker_policy("fleet", "", "cn-shanghai", "123456")
    assert not any("dlq" in r for s in no_dlq["Statement"] for r in _list(s["Resource"]))
    assert all(s["Resource"] for s in no_dlq["Statement"])  # no statement left without a resource


def test_doctor_names_a_denied_permission(emulator, config):
    assert cli("setup", "-c", str(config)).returncode == 0
    emulator.set_faults({"ecs": {"error_rate": 1.0, "error_code": "Forbidden.RAM", "error_status": 403}})
    proc = cli("doctor", "-c", str(config))
    assert proc.returncode == 1
    assert "✗ ECS DescribeInstances: Forbidden.RAM" in proc.stdout and "fix: grant ecs:DescribeInstances" in proc.stdout
    assert "✓ SLB reads" in proc.stdout and "✓ event rule" in proc.stdout  # the rest still checked


def test_doctor_start_instance_denied(emulator, config, monkeypatch):
    """Only StartInstance is denied: the dry run answers Forbidden.RAM and doctor says which grant."""
    from ecs_worker.config import load_config
    from ecs_worker.operations.doctor import FAIL, Doctor
    from ecs_worker.plugin_host.manager import load_plugins

    assert cli("setup", "-c", str(config)).returncode == 0
    cfg = load_config(config)
    doctor = Doctor(cfg, load_plugins(cfg))
    real = doctor.cloud.ecs

    def deny_start(action, **params):
        if action == "StartInstance":
            assert params["DryRun"] is True  # never a real start
            from ecs_worker.cloud import CloudError
            raise CloudError(action, "Forbidden.RAM", "User not authorized to operate on the specified resource.")
        return real(action, **params)
    monkeypatch.setattr(doctor.cloud, "ecs", deny_start)
    check = doctor.start_instance()
    assert check.mark == FAIL and "Forbidden.RAM" in check.text and "grant ecs:StartInstance" in check.fix


def test_chain_credentials_say_where_they_came_from(tmp_path):
    # In a fresh process: alibabacloud-credentials reads the environment once, at import.
    script = ("from ecs_worker.cloud.credentials import ChainProvider\n"
              "p = ChainProvider()\n"
              "print(p.get_credentials().access_key_id)\n"
              "print(p.describe())\n")
    env = {**os.environ, "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv",
           "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "canary-env-secret", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    key, described = proc.stdout.splitlines()
    assert key == "LTAIenv"
    assert "env" in described and "canary" not in proc.stdout + proc.stderr


def test_an_unreadable_secret_file_is_a_config_error(tmp_path, emulator):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mns]\nendpoint = "{emulator.mns_endpoint}"\n[credentials]\naccess_key_id = "LTAIx"\n'
                   f'access_key_secret_file = "{tmp_path / "missing"}"\n')
    for command in ("setup", "doctor"):
        proc = cli(command, "-c", str(cfg))
        assert proc.returncode == 2 and "access_key_secret_file: cannot read" in proc.stderr, proc.stderr


def test_a_shipped_policy_file_is_filled_in(tmp_path):
    shipped = tmp_path / "ram-policy.json"
    shipped.write_text(json.dumps({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": ["mns:BatchReceiveMessage"],
         "Resource": ["acs:mns:*:*:/queues/ecs-events/messages", "acs:mns:*:*:/queues/ecs-events-dlq/messages"]},
        {"Effect": "Allow", "Action": "ecs:StartInstance", "Resource": "*"}]}))
    doc = worker_policy("fleet", "fleet-dlq", "cn-beijing", "42", shipped=shipped)
    assert doc["Statement"][0]["Resource"] == ["acs:mns:cn-beijing:42:/queues/fleet/messages",
                                               "acs:mns:cn-beijing:42:/queues/fleet-dlq/messages"]
    assert doc["Statement"][1] == {"Effect": "Allow", "Action": "ecs:StartInstance", "Resource": "*"}
    assert json.loads(shipped.read_text())["Statement"][0]["Resource"][0].endswith("/ecs-events/messages")


def test_builtin_policy_is_the_shipped_one():
    """An installed package has no deploy/ directory: its built-in copy must say the same."""
    from ecs_worker.operations.ram_policy import SHIPPED, WORKER_POLICY

    assert json.loads(SHIPPED.read_text()) == WORKER_POLICY


def test_doctor_with_exactly_the_printed_policy(emulator, config):
    """The worker's keys under the policy setup printed: every check the worker's permissions can
    prove passes; the rule (CloudMonitor, which the worker never calls) is left to the admin."""
    assert cli("setup", "-c", str(config)).returncode == 0
    policy = worker_policy("fleet-events", "fleet-events-dlq", emulator.region, "*")
    emulator.set_ram_policy(policy)
    proc = cli("doctor", "-c", str(config))
    assert proc.returncode == 0, proc.stdout
    assert "– event rule ecs-worker-fleet-events: not readable with these credentials (Forbidden.RAM)" \
        in proc.stdout
    assert "✓ ecs:StartInstance: permitted" in proc.stdout and "✗" not in proc.stdout

    # Without StartInstance, the dry run is refused and doctor names the grant.
    for statement in policy["Statement"]:
        if "ecs:StartInstance" in statement["Action"]:
            statement["Action"].remove("ecs:StartInstance")
    emulator.set_ram_policy(policy)
    proc = cli("doctor", "-c", str(config))
    assert proc.returncode == 1
    assert "✗ ecs:StartInstance: Forbidden.RAM" in proc.stdout and "fix: grant ecs:StartInstance" in proc.stdout
    assert emulator.state()["instances"][1]["status"] == "Stopped"  # a dry run only: nothing started


def test_doctor_on_a_live_host_recognises_the_running_worker(emulator, config):
    from ecs_worker.observability.health import serve

    server = serve("127.0.0.1:0", 1)
    try:
        port = server.server_address[1]
        config.write_text(config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        assert cli("setup", "-c", str(config)).returncode == 0
        proc = cli("doctor", "-c", str(config))
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stdout
    assert f"✓ metrics: 127.0.0.1:{port} is served by a running ecs-worker" in proc.stdout


def test_setup_creates_the_signing_key_and_doctor_checks_it(emulator, config, tmp_path):
    doctor = cli("doctor", "-c", str(config))
    assert "– signing key: none" in doctor.stdout and "more than one worker shares the queue" in doctor.stdout
    key = tmp_path / "fleet.key"
    config.write_text(config.read_text().replace("[worker]\n", f'[worker]\nsigning_key_file = "{key}"\n'))
    dry = cli("setup", "--dry-run", "-c", str(config))
    assert f"would create: signing key {key}" in dry.stdout and not key.exists()
    done = cli("setup", "-c", str(config))
    assert f"+ signing key {key}: created (0600)" in done.stdout, done.stdout + done.stderr
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_text().strip()) == 64
    assert "✓ signing key: Signer(1 key(s))" in cli("doctor", "-c", str(config)).stdout
    os.chmod(key, 0o644)  # readable by others: refused, by doctor and by run alike
    assert "✗ signing key: [worker] signing_key_file" in cli("doctor", "-c", str(config)).stdout
    run = cli("run", "-c", str(config), timeout=30)
    assert run.returncode == 2 and "readable by others" in run.stderr and "chmod 600" in run.stderr
    check = cli("check-config", "-c", str(config))  # accepts exactly what run accepts
    assert check.returncode == 2 and "readable by others" in check.stderr
    os.chmod(key, 0o600)
    key.write_text("short\n")
    assert "at least 32 characters" in cli("doctor", "-c", str(config)).stdout
