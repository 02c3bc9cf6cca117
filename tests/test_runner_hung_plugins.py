"""Hung plugins against a real worker: one plugin's calls that never return use up only its
own threads, healthy plugins keep going, and SIGTERM still exits in bounded time."""
from __future__ import annotations

import json
import signal
import time

import pytest

from runner_kit import DLQ, QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until

# Hangs forever on every Instance:StateChange; never called for other events.
HANG_ON_STATE_CHANGE = '''
import threading
from ecs_worker import hookimpl

@hookimpl
def on_state_change(event, ctx):
    threading.Event().wait()
'''
# Called for every event; hangs forever on the ones marked "hang".
HANG_ON_MARKED = '''
import threading
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    if event.content.get("hang"):
        threading.Event().wait()
'''
ONLY_TEST_PLUGINS = ["hello", "restart", "slb", "webhook"]


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


def state_change(event_id: str) -> str:
    return json.dumps({"id": event_id, "name": "Instance:StateChange", "regionId": "cn-hangzhou",
                       "content": {"instanceId": "i-bp1test", "state": "Stopped"}})


def dead_letters(tmp_path) -> list[dict]:
    path = tmp_path / "state-worker" / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_64_hung_calls_dead_letter_no_healthy_event(emulator, tmp_path):
    """The issue's reproduction: 64 events hang one plugin forever; 80 healthy events,
    which only another plugin handles, must all be handled and none dead-lettered (with
    one shared pool of 64 threads they timed out and were dead-lettered). The hung events
    that could not even start wait for the plugin (deferred), charged nothing."""
    setup = Setup(tmp_path, emulator)
    hang = tmp_path / "hang.py"
    hang.write_text(HANG_ON_STATE_CHANGE)
    hung = [f"hung-{i:02d}" for i in range(64)]
    healthy = [f"ok-{i:02d}" for i in range(80)]
    for event_id in hung:
        emulator.send(QUEUE, state_change(event_id))
    for event_id in healthy:
        emulator.send(QUEUE, event_body(event_id))
    config = setup.config(mns__dead_letter_queue=DLQ, worker__max_attempts=3,
                          plugins__load=[str(setup.plugin), str(hang)],
                          plugins__disabled=ONLY_TEST_PLUGINS, plugins__call_timeout=1)
    worker = Worker(config)
    try:
        wait_until(lambda: set(healthy) <= set(setup.lines("done")), 90, interval=0.2,
                   message="every healthy event handled")
        wait_until(lambda: "waits: on_state_change not called" in worker.output(), 30, interval=0.2,
                   message="hung events waiting for the plugin")
        worker.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert worker.wait(30) == 0, worker.output()
        assert time.monotonic() - stopped < 20
    finally:
        worker.stop()
    records = dead_letters(tmp_path)
    assert {r["event_id"] for r in records} <= set(hung)  # no healthy one
    assert all("on_state_change" in r["error"] for r in records)
    assert "Traceback" not in worker.output()


@pytest.mark.slow
def test_a_call_that_never_returns_neither_stops_the_others_nor_holds_up_exit(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    hang = tmp_path / "hang.py"
    hang.write_text(HANG_ON_MARKED)
    emulator.send(QUEUE, event_body("stuck", hang=True))
    others = [f"other-{i:02d}" for i in range(20)]
    for event_id in others:
        emulator.send(QUEUE, event_body(event_id))
    shutdown_timeout = 3
    config = setup.config(plugins__load=[str(setup.plugin), str(hang)], plugins__disabled=ONLY_TEST_PLUGINS,
                          plugins__call_timeout=60, worker__shutdown_timeout=shutdown_timeout)
    worker = Worker(config)
    try:
        wait_until(lambda: set(others) <= set(setup.lines("done")), 30, message="the other events handled")
        assert "stuck" not in setup.lines("done")
        worker.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert worker.wait(shutdown_timeout + 15) == 0, worker.output()
        took = time.monotonic() - stopped
    finally:
        worker.stop()
    assert took < shutdown_timeout + 5, took  # the hung call's thread did not hold the exit
    assert sum(depth(emulator).values()) == 1  # not settled, not lost: it comes back


# Exits, interrupts and the like, from an event hook on marked events and from on_settled always.
ROGUE = '''
import sys
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    if event.content.get("exit"):
        sys.exit("leaving")
    if event.content.get("interrupt"):
        raise KeyboardInterrupt

@hookimpl
def on_settled(event, result, ctx):
    raise SystemExit(1)
'''


@pytest.mark.slow
def test_sys_exit_and_keyboard_interrupt_in_hooks_fail_only_their_own_message(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    rogue = tmp_path / "rogue.py"
    rogue.write_text(ROGUE)
    good = [f"good-{i:02d}" for i in range(30)]
    for i, event_id in enumerate(good):
        emulator.send(QUEUE, event_body(event_id))
        if i == 10:
            emulator.send(QUEUE, event_body("exits", exit=True))
        if i == 20:
            emulator.send(QUEUE, event_body("interrupts", interrupt=True))
    config = setup.config(mns__dead_letter_queue=DLQ, worker__max_attempts=2,
                          plugins__load=[str(setup.plugin), str(rogue)], plugins__disabled=ONLY_TEST_PLUGINS)
    worker = Worker(config)
    try:
        wait_until(lambda: len(dead_letters(tmp_path)) == 2, 60, interval=0.2, message="two dead letters")
        # Every good one settled and deleted although every on_settled call raised SystemExit.
        wait_until(lambda: sum(depth(emulator).values()) == 0, 30, message="the queue to drain")
        assert worker.alive()
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()
    finally:
        worker.stop()
    assert set(setup.lines("done")) >= set(good)
    errors = {r["event_id"]: r["error"] for r in dead_letters(tmp_path)}
    assert errors.keys() == {"exits", "interrupts"}
    assert errors["exits"].startswith("rogue: SystemExit: leaving")
    assert errors["interrupts"].startswith("rogue: KeyboardInterrupt")
    assert "plugin rogue failed in on_settled: SystemExit: 1" in worker.output()


HUNG_OBSERVER = '''
import threading
from ecs_worker import hookimpl

@hookimpl
def on_settled(event, result, ctx):
    threading.Event().wait()
'''


@pytest.mark.slow
def test_an_on_settled_that_never_returns_does_not_stop_settling_or_exit(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    observer = tmp_path / "observer.py"
    observer.write_text(HUNG_OBSERVER)
    ids = [f"obs-{i:02d}" for i in range(40)]
    for event_id in ids[:20]:
        emulator.send(QUEUE, event_body(event_id))
    config = setup.config(plugins__load=[str(setup.plugin), str(observer)], plugins__disabled=ONLY_TEST_PLUGINS,
                          plugins__call_timeout=2)
    worker = Worker(config)
    try:
        wait_until(lambda: set(setup.lines("done")) == set(ids[:20]), 30, message="the first events handled")
        time.sleep(2.5)  # the first on_settled call has overrun: the next ones are dropped
        for event_id in ids[20:]:
            emulator.send(QUEUE, event_body(event_id))
        wait_until(lambda: set(setup.lines("done")) == set(ids), 30, message="every event handled")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 15, message="every message deleted")
        worker.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert worker.wait(30) == 0, worker.output()
        assert time.monotonic() - stopped < 10
    finally:
        worker.stop()
    assert "plugin observer on_settled not called: its previous call overran 2s" in worker.output()
