"""One fleet on a shared Redis store (a real server on 127.0.0.1): three workers as real
processes on one queue, duplicate deliveries, `kill -9`s and a Redis restart in the middle.
A side-effecting plugin sees each event once fleet-wide; only events that were running in
a killed worker may run again (counted); nothing is lost.

Size: `ECS_WORKER_FLEET_EVENTS` (default 1,000: about 25 s on 2 busy cores)."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until

EVENTS = int(os.environ.get("ECS_WORKER_FLEET_EVENTS") or 1000)


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=10)


def _records(setup):
    """(kind, event id, pid) for every line the plugin wrote."""
    if not setup.record.exists():
        return []
    return [tuple(line.split()) for line in setup.record.read_text().splitlines() if line.count(" ") == 2]


@pytest.mark.slow
def test_three_workers_share_dedupe_through_kills_and_a_redis_restart(emulator, own_redis, tmp_path):
    setup = Setup(tmp_path, emulator, worker__store=own_redis.url, worker__concurrency=6,
                  plugins__call_timeout=5)
    ids = [f"fleet-{i:05d}" for i in range(EVENTS)]
    twice = set(ids[::4])  # a quarter delivered twice: one copy at once, one a little later
    for event_id in ids:
        emulator.send(QUEUE, event_body(event_id, sleep=0.01))
        if event_id in twice and int(event_id[-1]) % 2:
            emulator.send(QUEUE, event_body(event_id, sleep=0.01))
    configs = [setup.config(name) for name in "abc"]
    workers = {name: Worker(cfg) for name, cfg in zip("abc", configs)}
    killed: set[str] = set()
    late_sent = False

    def done_count():
        return len({r[1] for r in _records(setup) if r[0] == "done"})

    def kill_and_replace(name):
        victim = workers[name]
        killed.add(str(victim.proc.pid))
        victim.proc.send_signal(signal.SIGKILL)
        victim.wait(10)
        workers[name] = Worker(configs["abc".index(name)])  # the service manager's restart

    started = time.monotonic()
    try:
        wait_until(lambda: done_count() >= EVENTS // 4, 60, interval=0.05, message="a quarter handled")
        kill_and_replace("a")
        for event_id in sorted(twice):  # the later copies of the rest of the duplicates
            if not int(event_id[-1]) % 2:
                emulator.send(QUEUE, event_body(event_id, sleep=0.01))
        late_sent = True
        wait_until(lambda: done_count() >= EVENTS // 2, 60, interval=0.05, message="half handled")
        own_redis.restart(down_for=1.0)
        wait_until(lambda: done_count() >= 3 * EVENTS // 4, 60, interval=0.05, message="3/4 handled")
        kill_and_replace("b")
        wait_until(lambda: done_count() >= EVENTS, 90, interval=0.2, message="every event handled")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 60, interval=0.2, message="the queue to drain")
        for w in workers.values():
            w.signal()
        assert [w.wait(30) for w in workers.values()] == [0, 0, 0]
    finally:
        for w in workers.values():
            w.stop()
    assert late_sent
    records = _records(setup)
    done = Counter(r[1] for r in records if r[0] == "done")
    assert set(done) == set(ids)  # nothing lost
    # Running in a worker when it was killed (its plugin may have finished, its outcome not
    # settled yet): may run again, once. Everything else ran exactly once, duplicates too.
    in_killed = {r[1] for r in records if r[0] == "start" and r[2] in killed}
    repeats = {i: n for i, n in done.items() if n > 1}
    assert set(repeats) <= in_killed, {i: n for i, n in repeats.items() if i not in in_killed}
    assert max(repeats.values(), default=1) <= 2
    print(f"\n{EVENTS} events, {len(twice)} delivered twice, {len(killed)} kill -9s, 1 Redis restart: "
          f"{len(repeats)} ran again after a kill; {time.monotonic() - started:.1f}s")
    logs = "".join(w.output() for w in workers.values())
    assert "state store" in logs  # the restart was noticed, and survived


def test_a_crash_looping_instance_is_restarted_exactly_the_hourly_budget_fleet_wide(redis_server, tmp_path):
    """Three workers' restart plugins on one shared store: the instance stops again after
    every start, and each worker sees some of the stops; 3 restarts an hour means 3."""
    from ecs_worker.testing import run_emulator
    from test_restart import Worker as RestartWorker, fleet, instance, starts, stop, stopped

    store = {"store": redis_server.url, "store_fleet": f"crashloop-{tmp_path.name}"}
    with run_emulator(fleet(instance("i-loop"))) as emu:
        workers = [RestartWorker(emu, tmp_path / f"w{n}", settings=store) for n in range(3)]
        try:
            outcomes = []
            for n in range(9):
                outcomes.append(workers[n % 3].handle(stopped("i-loop", n)).outcome)
                if outcomes[-1] == "handled":
                    stop(emu, "i-loop")  # it crashes again (an operator's stop: the worker has no StopInstance)
        finally:
            for w in workers:
                w.close()
    assert starts(emu) == 3
    assert outcomes == ["handled"] * 3 + ["ignored"] * 6
