"""Faults: transient MNS trouble never stops the worker; configuration mistakes stop it at
once with one clear line and exit code 2 (so systemd does not hammer the API)."""
from __future__ import annotations

import time

import pytest

from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


@pytest.mark.slow
def test_mns_errors_drops_latency_and_throttling_delay_but_never_lose_events(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    ids = [f"fault-{i:03d}" for i in range(200)]
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id))
    emulator.set_faults({"mns": {"error_rate": 0.2, "drop_rate": 0.05, "latency_ms": 20,
                                 "throttle_rps": 20}})
    # Small batches: more requests, so every kind of fault is met.
    worker = Worker(setup.config(worker__concurrency=8, mns__batch_size=4))
    try:
        deadline = time.monotonic() + 60
        while set(setup.lines("done")) != set(ids) and time.monotonic() < deadline:
            assert worker.alive(), worker.output()[-2000:]
            time.sleep(0.2)
        assert set(setup.lines("done")) == set(ids), f"{len(set(setup.lines('done')))} of {len(ids)}"
        emulator.set_faults({"mns": {}})
        wait_until(lambda: sum(depth(emulator).values()) == 0, 15, message="the queue to drain")
        assert worker.alive()
        worker.signal()
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    out = worker.output()
    # It met the faults (and said so), and carried on.
    assert "InternalError" in out and "retrying in" in out


def _start_and_fail(config) -> tuple[int, str]:
    worker = Worker(config)
    try:
        return worker.wait(30), worker.output()
    finally:
        worker.stop()


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("ecs-worker: error:")]


@pytest.mark.slow
def test_missing_queue_is_a_one_line_error_and_exit_2(emulator, tmp_path):
    code, out = _start_and_fail(Setup(tmp_path, emulator).config(mns__queue="no-such-queue"))
    assert code == 2
    assert len(_error_lines(out)) == 1 and "QueueNotExist" in _error_lines(out)[0], out


@pytest.mark.slow
def test_wrong_secret_is_a_one_line_error_exit_2_and_never_shows_the_secret(emulator, tmp_path):
    secret = "wrong-but-secret-value-0000"
    code, out = _start_and_fail(Setup(tmp_path, emulator).config(credentials__access_key_secret=secret))
    assert code == 2
    assert len(_error_lines(out)) == 1 and "SignatureDoesNotMatch" in out, out
    assert secret not in out and emulator.access_key_secret not in out


@pytest.mark.slow
def test_unknown_access_key_is_exit_2(emulator, tmp_path):
    code, out = _start_and_fail(Setup(tmp_path, emulator).config(credentials__access_key_id="LTAInobody"))
    assert code == 2 and "InvalidAccessKeyId" in out, out


@pytest.mark.slow
def test_unreadable_config_and_secret_file_are_exit_2(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    bad = tmp_path / "bad.toml"
    bad.write_text("[mns\nqueue = 1\n")
    code, out = _start_and_fail(bad)
    assert code == 2 and len(_error_lines(out)) == 1 and "not valid TOML" in out, out
    missing = setup.config("missing", credentials__access_key_secret="",
                           credentials__access_key_secret_file=str(tmp_path / "nope"))
    code, out = _start_and_fail(missing)
    assert code == 2 and "access_key_secret_file" in out, out


@pytest.mark.slow
def test_plugin_failing_at_startup_is_exit_2_and_consumes_nothing(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    broken = tmp_path / "broken.py"
    broken.write_text("from ecs_worker import hookimpl\n\n@hookimpl\ndef on_startup(ctx):\n"
                      "    raise RuntimeError('cannot reach the CMDB')\n")
    emulator.send(QUEUE, event_body("untouched"))
    code, out = _start_and_fail(setup.config(plugins__load=[str(setup.plugin), str(broken)]))
    assert code == 2 and "broken" in _error_lines(out)[0] and "CMDB" in out, out
    assert depth(emulator)["visible"] == 1 and not setup.lines("start")
