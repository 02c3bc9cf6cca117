"""A canary secret never reaches a log, stdout or an error message — at DEBUG, through
every path that touches credentials: MNS, ECS, SLB, dead letters, start-up failures."""
import json
import subprocess
import sys

import pytest

from ecs_worker.emulator import default_state
from ecs_worker.testing import body, interruption, state_change, run_emulator
from runner_kit import QUEUE, Setup, Worker, depth, wait_until

SECRET = "CANARY-s3cr3t-Zq81xW"
TOKEN = "CANARY-t0ken-Pv55yL"


def canary_state() -> dict:
    state = default_state()
    state["credentials"] = [{"access_key_id": "LTAIcanary0000001", "access_key_secret": SECRET,
                             "security_token": TOKEN}]
    for q in state["queues"]:
        q["visibility_timeout"] = 3
    state["start_delay_seconds"] = 0.2
    return state


def assert_no_canary(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and TOKEN not in text
        # nor a recognisable piece of it (a secret cut in half is still a leak)
        assert SECRET[:12] not in text and TOKEN[:12] not in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_canary_never_logged_at_debug_while_acting_on_every_path(tmp_path, log_format, monkeypatch):
    monkeypatch.delenv("ALIYUN_ACCESS_KEY_ID", raising=False)
    with run_emulator(canary_state()) as emu:
        setup = Setup(tmp_path, emu)
        config = setup.config(
            credentials__security_token=TOKEN, logging__level="DEBUG", logging__format=log_format,
            mns__dead_letter_queue="ecs-events-dlq", plugins__disabled=["hello", "webhook"])
        text = config.read_text() + "\n[plugins.restart]\ngrace_seconds = 1\n"
        config.write_text(text)
        messages = [body(state_change("i-bp1web000000000002", "Stopped")),   # opted in: restart
                    body(interruption("i-bp1spot00000000001")),              # SLB removal
                    "not an event at all"]                                    # dead letter
        for m in messages:
            emu.send(QUEUE, m)
        worker = Worker(config)
        try:
            wait_until(lambda: sum(depth(emu).values()) == 0, timeout=40, message="queue drained")
            state = emu.state()
            assert state["calls"].get("ecs:StartInstance", 0) >= 1
            assert state["calls"].get("slb:RemoveVServerGroupBackendServers", 0) >= 1
            worker.signal()
            assert worker.wait(30) == 0
        finally:
            worker.stop()
        output = worker.output()
        assert "DEBUG" in output or '"level": "DEBUG"' in output  # the run really logged at DEBUG
        dead = (tmp_path / "state-worker" / "dead-letter.jsonl").read_text()
        assert_no_canary(output, dead, config.with_suffix(".log").read_text() if
                         config.with_suffix(".log").exists() else "")


def test_rejected_secret_fails_start_up_with_one_line_and_no_secret(tmp_path):
    with run_emulator(canary_state()) as emu:
        setup = Setup(tmp_path, emu)
        config = setup.config(credentials__access_key_secret=SECRET + "-wrong",
                              credentials__security_token=TOKEN, logging__level="DEBUG")
        proc = subprocess.run([sys.executable, "-m", "ecs_worker", "run", "-c", str(config)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert_no_canary(proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors and "SignatureDoesNotMatch" in proc.stderr


def test_check_config_and_plugins_never_print_secrets(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[credentials]\naccess_key_id = "LTAIx"\naccess_key_secret = "{SECRET}"\n'
                    f'security_token = "{TOKEN}"\n[worker]\nconcurrency = 0\n')
    bad = subprocess.run([sys.executable, "-m", "ecs_worker", "check-config", "-c", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    path.write_text(path.read_text().replace("concurrency = 0", "concurrency = 2"))
    good = subprocess.run([sys.executable, "-m", "ecs_worker", "plugins", "--json", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and json.loads(good.stdout)
    assert_no_canary(bad.stdout, bad.stderr, good.stdout, good.stderr)


def test_last_line_of_defence_masks_anything_shaped_like_a_secret():
    from ecs_worker.observability.logsetup import scrub

    assert scrub(f"access_key_secret={SECRET} next") == "access_key_secret=*** next"
    assert scrub(f'{{"SecurityToken": "{TOKEN}"}}') == '{"SecurityToken": "***"}'
    assert scrub("plain line about i-bp1 Stopped") == "plain line about i-bp1 Stopped"
