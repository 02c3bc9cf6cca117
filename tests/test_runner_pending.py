"""Held messages: plugin futures (the SLB batcher's way) hold no handler slot, and every held
message — in a handler or pending — stays invisible past the queue's visibility timeout."""
from __future__ import annotations

import time

import pytest

from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until

FUTURE_PLUGIN = '''
import os, threading
from concurrent.futures import Future
from ecs_worker import hookimpl

def _write(line):
    with open({record!r}, "a") as fh:
        fh.write(line + "\\n")

@hookimpl
def on_event(event, ctx):
    _write(f"start {{event.id}}")
    if event.content.get("sleep"):
        import time; time.sleep(event.content["sleep"])
        _write(f"done {{event.id}}")
        return "slept"
    future = Future()
    def resolve():
        _write(f"done {{event.id}}")
        future.set_result("coalesced")
    threading.Timer({delay}, resolve).start()
    return future
'''


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=2)  # shorter than every handler below


@pytest.mark.slow
def test_pending_futures_hold_no_handler_slot_and_stay_invisible_until_settled(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    setup.plugin.write_text(FUTURE_PLUGIN.format(record=str(setup.record), delay=4))
    ids = [f"pending-{i:02d}" for i in range(40)]
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id))
    emulator.send(QUEUE, event_body("slow-handler", sleep=4))
    worker = Worker(setup.config(worker__concurrency=2))
    began = time.monotonic()
    try:
        wait_until(lambda: len(setup.lines("start")) == len(ids) + 1, 10, message="all started")
        # One handler is busy for 4 s and the other took 40 messages meanwhile: pending work
        # does not occupy handlers.
        assert time.monotonic() - began < 6
        wait_until(lambda: set(setup.lines("done")) == {*ids, "slow-handler"}, 15, message="all done")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="the queue to drain")
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()
    # Held for twice the queue's visibility timeout, yet never redelivered: extended in time.
    assert sorted(setup.lines("start")) == sorted([*ids, "slow-handler"])
    assert emulator.state()["calls"].get("mns:ChangeMessageVisibility", 0) >= len(ids) + 1


@pytest.mark.slow
def test_max_pending_bounds_what_the_worker_holds(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    setup.plugin.write_text(FUTURE_PLUGIN.format(record=str(setup.record), delay=2))
    for i in range(15):
        emulator.send(QUEUE, event_body(f"bounded-{i:02d}"))
    worker = Worker(setup.config(worker__concurrency=4, worker__max_pending=5))
    try:
        wait_until(lambda: len(setup.lines("start")) >= 5, 10, message="five held")
        time.sleep(1)
        # Back-pressure: no more than max_pending taken off the queue while they are pending.
        assert len(setup.lines("start")) == 5 and depth(emulator)["in_flight"] == 5
        wait_until(lambda: len(set(setup.lines("done"))) == 15, 30, message="all done")
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()



@pytest.mark.slow
@pytest.mark.parametrize("emulator_state", [short_visibility(visibility_timeout=10)])  # no renewal within
def test_a_hiccup_at_start_up_does_not_cap_what_the_worker_holds(emulator, tmp_path):
    """The first MNS call fails twice and is retried after pauses: those are no round trip,
    so the renewals' capacity (about 20 at 0.8 s a call, hundreds at a warm round trip)
    still lets the worker hold every waiting notice at once — as a wave of spot notices
    must be, or its late part reaches the plugins after the first part's calls left."""
    setup = Setup(tmp_path, emulator)
    setup.plugin.write_text(FUTURE_PLUGIN.format(record=str(setup.record), delay=2))
    ids = [f"wave-{i:02d}" for i in range(40)]
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id))
    emulator.set_faults({"mns": {"error_rate": 1.0, "error_code": "InternalError",
                                 "actions": ["GetQueueAttributes"]}})
    worker = Worker(setup.config())
    try:
        wait_until(lambda: worker.output().count("retrying in") >= 2, 10, message="two retries at start-up")
        emulator.set_faults({"mns": {}})
        wait_until(lambda: set(setup.lines("done")) == set(ids), 20, message="all done")
        record = [line.split()[0] for line in setup.record.read_text().splitlines()]
        # Every notice was held before the first was done: none waited for room.
        assert record.index("done") == len(ids), record
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="the queue to drain")
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()
