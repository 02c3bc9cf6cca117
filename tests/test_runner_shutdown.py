"""Stopping the worker: SIGTERM finishes in-flight work and loses nothing; kill -9 loses
nothing either, and only messages in flight at the kill are handled twice."""
from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=3)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_work_releases_the_rest_and_exits_0(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    ids = [f"term-{i:02d}" for i in range(30)]
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id, sleep=1.5))
    worker = Worker(setup.config(worker__concurrency=4))
    try:
        wait_until(lambda: len(setup.lines("start")) >= 4, 15, message="four handlers busy")
        worker.signal(signal.SIGTERM)
        started_at_stop = set(setup.lines("start"))
        stopped = time.monotonic()
        assert worker.wait(20) == 0, worker.output()
        took = time.monotonic() - stopped
    finally:
        worker.stop()
    done = set(setup.lines("done"))
    # Everything that had started was finished, not abandoned.
    assert started_at_stop <= done, worker.output()
    # It did not wait for the whole backlog (30 x 1.5 s / 4 handlers is > 10 s).
    assert took < 8 and len(done) < len(ids)
    # Unstarted messages were released at once (visibility 1 s, the least MNS accepts), not
    # hidden until a timeout.
    wait_until(lambda: depth(emulator)["in_flight"] == 0, 2.5, message="released messages visible again")
    q = depth(emulator)
    assert q["in_flight"] == 0 and q["visible"] == len(ids) - len(done), q
    # Released before they started, they used up no attempt.
    from store_kit import ReadableStore as Store

    store = Store(tmp_path / "state-worker")
    released = [i for i in ids if i not in done]
    assert [store.attempts(i) for i in released] == [0] * len(released)
    store.close()

    restart = Worker(setup.config(worker__concurrency=16))
    try:
        wait_until(lambda: set(setup.lines("done")) == set(ids), 20, message="the rest handled")
        restart.signal()
        assert restart.wait(20) == 0
    finally:
        restart.stop()
    assert sorted(setup.lines("done")) == sorted(ids)  # each exactly once


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_handles_everything(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    ids = [f"kill-{i:03d}" for i in range(300)]
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id, sleep=0.02))
    concurrency, batch = 4, 16
    worker = Worker(setup.config(worker__concurrency=concurrency, mns__batch_size=batch))
    try:
        wait_until(lambda: len(setup.lines("done")) >= 100, 20, message="a third handled")
        worker.signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.stop()
    before_kill = Counter(setup.lines("done"))
    assert len(before_kill) < len(ids)

    restart = Worker(setup.config(worker__concurrency=concurrency, mns__batch_size=batch))
    try:
        wait_until(lambda: set(setup.lines("done")) == set(ids), 30, message="every event handled")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="the queue to drain")
        restart.signal()
        assert restart.wait(20) == 0
    finally:
        restart.stop()
    handled = Counter(setup.lines("done"))
    assert set(handled) == set(ids)
    twice = [i for i, n in handled.items() if n > 1]
    # Only messages held at the kill come back: at most a batch beyond the busy handlers.
    assert len(twice) <= concurrency + batch, twice
    assert all(n == 2 for i, n in handled.items() if i in twice)
    assert set(twice) <= set(before_kill), twice  # a second run only of what had run


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_the_message_comes_back(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    emulator.send(QUEUE, event_body("stuck", sleep=30))
    worker = Worker(setup.config(worker__shutdown_timeout=60))
    try:
        wait_until(lambda: setup.lines("start") == ["stuck"], 15, message="the handler to start")
        worker.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.alive()  # the first signal waits for the handler
        worker.signal(signal.SIGINT)
        stopped = time.monotonic()
        assert worker.wait(10) == 128 + signal.SIGINT
        assert time.monotonic() - stopped < 2
    finally:
        worker.stop()
    # Not settled, not lost: it reappears once its visibility (extended to 10 s) runs out.
    assert depth(emulator)["in_flight"] == 1
