"""Where the real cloud differs from a naive emulator (issue 11), end to end: MNS past its
long-poll limit, RAM policies, and the worker's answers to both. docs/cloud-behaviour.md
lists each behaviour with its source and the test that holds it."""
from __future__ import annotations

import random
import threading
import time

import pytest

from ecs_worker.credentials import Credentials, StaticProvider
from ecs_worker.sources.mns import EARLY_EMPTY_JITTER, MnsQueue, early_empty_delay
from runner_kit import QUEUE, Setup, Worker, event_body, wait_until


def _queue(emulator, wait=2) -> MnsQueue:
    creds = Credentials(emulator.access_key_id, emulator.access_key_secret)
    return MnsQueue(emulator.mns_endpoint, QUEUE, StaticProvider(creds), wait_seconds=wait)


def test_early_empty_backoff_grows_is_capped_at_the_wait_and_jitters_only_upwards():
    rng = random.Random(7)
    delays = [early_empty_delay(n, 20, rng) for n in range(1, 12)]
    assert delays[0] < 1 and delays[1] < 2 < delays[3]  # grows
    assert all(20 <= d <= 20 * (1 + EARLY_EMPTY_JITTER) for d in delays[6:])  # capped, never under the wait
    # Steady state: at most one call per wait, i.e. 3600 / wait_seconds an hour.
    assert 3600 / min(delays[6:]) <= 3600 / 20


def test_an_early_empty_answer_backs_off_and_stop_cuts_the_pause_short(emulator):
    emulator.set_faults({"mns": {"long_poll_limit": 0}})
    source = _queue(emulator, wait=10)
    source.early_empties = 5  # next pause about 10 s
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    assert source.receive(16, 10, stop) == []
    assert 0.25 <= time.monotonic() - t0 < 2.0
    emulator.set_faults({"mns": {}})
    emulator.send(QUEUE, event_body("e-after"))
    assert len(source.receive(16, 10)) == 1 and source.early_empties == 0


@pytest.mark.slow
def test_past_the_long_poll_limit_an_idle_worker_polls_about_once_per_wait(emulator, tmp_path):
    """Before the fix one worker made 5,377 receive calls in 3 s against this emulator mode."""
    emulator.set_faults({"mns": {"long_poll_limit": 0}})
    setup = Setup(tmp_path, emulator)
    wait = 2
    worker = Worker(setup.config(mns__wait_seconds=wait))
    try:
        wait_until(lambda: emulator.state()["calls"].get("mns:BatchReceiveMessage", 0) >= 1, 20,
                   message="the first receive")
        emulator.reset_calls()
        window = 8.0
        time.sleep(window)
        calls = emulator.state()["calls"].get("mns:BatchReceiveMessage", 0)
        # A ramp (0.5, 1, 2 s) then one call per wait: about 6; never the spin of thousands.
        assert 2 <= calls <= window / wait + 4, calls
        # The limit lifts: the worker's next poll is a real long poll and takes the event.
        emulator.set_faults({"mns": {}})
        emulator.send(QUEUE, event_body("after-limit"))
        wait_until(lambda: "after-limit" in setup.lines("done"), wait * 2 + 10, message="the event handled")
        worker.signal()
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.stop()
