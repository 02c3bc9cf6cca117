"""Scale-out: several workers on one queue share the work and lose nothing."""
from __future__ import annotations

from collections import Counter

import pytest

from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=10)


@pytest.mark.slow
def test_two_workers_share_one_queue_and_handle_every_event(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    ids = [f"scale-{i:04d}" for i in range(1000)]
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id))
    workers = [Worker(setup.config("a", worker__concurrency=8)),
               Worker(setup.config("b", worker__concurrency=8))]
    try:
        wait_until(lambda: len(set(setup.lines())) >= len(ids), 60, interval=0.2,
                   message="all 1000 events handled")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="the queue to drain")
        for w in workers:
            w.signal()
        assert [w.wait(30) for w in workers] == [0, 0]
    finally:
        for w in workers:
            w.stop()
    done = setup.lines("done")
    assert set(done) == set(ids)
    # Both took part: that is what scale-out means.
    by_pid = Counter(line.split()[2] for line in setup.record.read_text().splitlines()
                     if line.startswith("done"))
    assert len(by_pid) == 2 and min(by_pid.values()) > 50, by_pid
    # No message was delivered twice: with long enough visibility nothing needs to be.
    assert len(done) == len(ids), Counter(done).most_common(3)
