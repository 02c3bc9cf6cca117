"""An outside kill charges nobody (issue 17, item 7): `kill -9` of the worker — an
operator, the OOM killer — twice while one healthy message ran alone, with
`max_attempts = 2`, used to dead-letter it ("died while this one ran alone"). Now a
worker's death charges nobody; the message runs next in quarantine and is handled."""
from __future__ import annotations

import json
import signal

import pytest

from runner_kit import DLQ, QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=1)  # a killed worker's message returns fast


def test_kill_9_of_the_worker_while_a_healthy_message_runs_alone_charges_it_nothing(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    emulator.send(QUEUE, event_body("innocent", sleep=1.5))
    config = setup.config(mns__dead_letter_queue=DLQ, worker__max_attempts=2)
    for kill in (1, 2):  # killed from outside each time it is running (the 2nd: in quarantine)
        worker = Worker(config)
        try:
            wait_until(lambda: len(setup.lines("start")) >= kill, 20, message=f"start #{kill}")
            worker.signal(signal.SIGKILL)
            assert worker.wait(10) == -signal.SIGKILL
        finally:
            worker.stop()
    worker = Worker(config)
    try:
        wait_until(lambda: sum(depth(emulator).values()) == 0, 30, interval=0.1, message="the queue to drain")
        worker.signal()
        assert worker.wait(20) == 0, worker.output()[-2000:]
    finally:
        worker.stop()
    dead = tmp_path / "state-worker" / "dead-letter.jsonl"
    assert not dead.exists(), [json.loads(line)["error"] for line in dead.read_text().splitlines()]
    assert sum(depth(emulator, DLQ).values()) == 0
    assert "innocent" in setup.lines("done")
