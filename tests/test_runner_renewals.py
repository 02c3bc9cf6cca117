"""Renewals keep up with a slow MNS: at 400 ms a call, two workers sharing a queue whose
visibility timeout (2 s) is shorter than each event's handling (2.5 s) run every event
exactly once — renewals run side by side, start early enough for the measured round
trip, and neither worker holds more messages than its renewals can keep hidden."""
from __future__ import annotations

import signal
from collections import Counter

import pytest

from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until

LATENCY_MS = 400
EVENTS = 40


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=2)


def test_two_workers_at_400ms_mns_latency_run_no_event_twice(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    ids = [f"slow-{i:02d}" for i in range(EVENTS)]
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id, sleep=2.5))
    emulator.set_faults({"mns": {"latency_ms": LATENCY_MS}})
    workers = [Worker(setup.config(name, worker__concurrency=16)) for name in ("a", "b")]
    try:
        wait_until(lambda: set(setup.lines("done")) >= set(ids), 60, interval=0.2,
                   message="every event handled")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 15, interval=0.2, message="queue empty")
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(30) == 0, worker.output()[-2000:]
    finally:
        for worker in workers:
            worker.stop()
    twice = {k: n for k, n in Counter(setup.lines("start")).items() if n > 1}
    assert not twice, f"{len(twice)} event(s) ran more than once: {sorted(twice)[:10]}"
    assert sorted(setup.lines("done")) == sorted(ids)
    assert "lost its invisibility" not in workers[0].output() + workers[1].output()
