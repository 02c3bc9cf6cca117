"""A stuck plugin costs no healthy event: while all of a plugin's threads are stuck, the
events it is called for wait (deferred, never charged); /healthz turns 503 naming it and
the metrics count its stuck calls; past `stuck_exit_seconds` the worker exits 3, and a
supervisor that restarts it (as `Restart=always` does) clears the stuck threads. Each
stuck call is an attempt of the event it ran, so the event that hangs the plugin every
time is dead-lettered after `max_attempts` and the restarts stop."""
from __future__ import annotations

import json
import time

import pytest

from ecs_worker.exit_codes import EXIT_STUCK
from runner_kit import (DLQ, QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body,
                        free_port, get)

# Called for every event; hangs forever on the ones marked "hang".
HANG_ON_MARKED = '''
import threading
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    if event.content.get("hang"):
        threading.Event().wait()
'''
MAX_ATTEMPTS = 3


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


def test_a_stuck_plugin_makes_events_wait_reports_itself_and_restarts_the_worker(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    hang = tmp_path / "hang.py"
    hang.write_text(HANG_ON_MARKED)
    hung = ["hang-1", "hang-2"]
    healthy = [f"ok-{i:02d}" for i in range(20)]
    for event_id in hung:
        emulator.send(QUEUE, event_body(event_id, hang=True))
    time.sleep(0.2)  # the hanging ones first: they take both of the plugin's threads
    for event_id in healthy:
        emulator.send(QUEUE, event_body(event_id))
    port = free_port()
    config = setup.config(mns__dead_letter_queue=DLQ, metrics__listen=f"127.0.0.1:{port}",
                          worker__max_attempts=MAX_ATTEMPTS, worker__retry_max_seconds=1,
                          worker__shutdown_timeout=2,
                          plugins__load=[str(setup.plugin), str(hang)], plugins__call_timeout=1,
                          plugins__max_calls_per_plugin=2, plugins__stuck_health_seconds=0.5,
                          plugins__stuck_exit_seconds=3)
    seen_503, stuck_metric, exits = None, None, []
    deadline = time.monotonic() + 90
    while sum(depth(emulator).values()) and time.monotonic() < deadline:  # the supervisor
        worker, stopping = Worker(config), False
        try:
            while worker.alive() and time.monotonic() < deadline:
                if seen_503 is None:
                    try:
                        status, body = get(port, "/healthz")
                    except OSError:
                        status, body = 0, {}
                    if status == 503:
                        seen_503 = body
                        stuck_metric = get(port, "/metrics")[1]
                if not stopping and not sum(depth(emulator).values()):
                    worker.signal()  # all settled: stop it (once; a second SIGTERM exits at once)
                    stopping = True
                time.sleep(0.1)
            exits.append(worker.wait(30))
        finally:
            worker.stop()
        assert "Traceback" not in worker.output(), worker.output()[-3000:]
    assert not sum(depth(emulator).values()), f"queue not drained; exits {exits}"
    assert seen_503 and seen_503["status"] == "stuck" and "hang" in seen_503["stuck_plugins"], seen_503
    assert 'ecs_worker_plugin_stuck_calls{plugin="hang"} 2.0' in stuck_metric
    # It exited 3 when stuck, was restarted, and the restarts stopped: each stuck call was an
    # attempt of the event that hung, which was dead-lettered after max_attempts.
    assert EXIT_STUCK in exits and exits[-1] == 0 and len(exits) <= MAX_ATTEMPTS + 1, exits
    path = tmp_path / "state-worker" / "dead-letter.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["event_id"] for r in records) == hung  # and no healthy event
    assert set(healthy) <= set(setup.lines("done"))
