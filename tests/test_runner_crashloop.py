"""A poison message that kills the worker costs the service one restart, ever: it then
runs in a quarantine child process, whose crashes are charged to it alone, and it is
dead-lettered after `max_attempts` of them while the worker serves on (issue 17, item 3)."""
from __future__ import annotations

import json
import time

import pytest

from ecs_worker.config import WorkerConfig
from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until
from systemd_kit import UNITS, StartLimit, restart_sec

UNIT = UNITS / "ecs-worker.service"

CRASHING_PLUGIN = '''
import os
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    if event.content.get("crash"):
        with open({record!r}, "a") as fh:
            fh.write(f"crash {{event.id}}\\n")
        os._exit(3)  # what a segfaulting C extension or the OOM killer does
'''


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=1)  # a crashed worker's messages return fast


@pytest.mark.slow
def test_a_message_that_crashes_the_worker_is_dead_lettered_after_max_attempts(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    crasher = tmp_path / "crasher.py"
    crasher.write_text(CRASHING_PLUGIN.format(record=str(setup.record)))
    # Alone: messages being handled beside it when it kills the worker count an attempt too.
    emulator.send(QUEUE, event_body("poison", crash=True))
    # The default budget (5) under the shipped unit's start limit (5 starts in 300 s): with a
    # restart per crash, systemd gave up before the message was dead-lettered (issue 17, item 3).
    max_attempts = WorkerConfig().max_attempts
    config = setup.config(worker__max_attempts=max_attempts, plugins__load=[str(setup.plugin), str(crasher)])
    dead_letters = tmp_path / "state-worker" / "dead-letter.jsonl"
    exits = []
    # systemd as the shipped unit configures it: each start goes through its start limit,
    # RestartSec after the previous exit (the worker's own time runs as measured).
    limit, pause, began, waited = StartLimit.of(UNIT), restart_sec(UNIT), time.monotonic(), 0.0
    for _ in range(max_attempts + 2):  # the supervisor's restarts, bounded
        assert limit.start(time.monotonic() - began + waited), f"systemd gave up after exits {exits}"
        waited += pause
        worker = Worker(config)
        try:
            deadline = time.monotonic() + 15
            while worker.alive() and not dead_letters.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not worker.alive():
                exits.append(worker.wait(5))
                continue
            # Given up on, it no longer stops the flow.
            good = [f"good-{i}" for i in range(5)]
            for event_id in good:
                emulator.send(QUEUE, event_body(event_id))
            wait_until(lambda: set(setup.lines("done")) == set(good), 15, message="the good events")
            wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="the queue to drain")
            worker.signal()
            exits.append(worker.wait(20))
            break
        finally:
            worker.stop()
    # One crash of the worker (charged to nobody: an outside kill looks the same), then
    # max_attempts of its quarantine process while the worker lived on; then it was given up on.
    assert exits == [3, 0]
    assert setup.lines("crash") == ["poison"] * (1 + max_attempts)
    (record,) = [json.loads(line) for line in dead_letters.read_text().splitlines()]
    assert record["event_id"] == "poison" and record["reason"] == "max_attempts"
    assert record["attempts"] == max_attempts and "quarantine process (it exited with code 3)" in record["error"]
