"""Poison and retries: invalid bodies and events a plugin always fails end in the dead-letter
queue (and dead-letter.jsonl) after the right number of attempts, with the reason; good
events around them flow on; a deferral is not an attempt and resumes only its plugin."""
from __future__ import annotations

import json

import pytest

from ecs_worker.testing import mns_queue
from runner_kit import DLQ, QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until

SECOND_PLUGIN = '''
import os, time
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    if not event.content.get("defer_second"):
        return None
    since = ctx.deferred_since
    with open({record!r}, "a") as fh:
        fh.write(f"second {{event.id}} {{since}}\\n")
    if since is None or time.time() - since < 1.5:
        ctx.defer(1, "draining")  # twice: the second return still sees the first deferral time
        return "deferred"
    return "drained"
'''


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


@pytest.mark.slow
def test_invalid_and_always_failing_events_are_dead_lettered_and_good_ones_flow(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    invalid = ["{broken json", "%%% not base64 %%%"]
    failing = ["fail-1", "fail-2"]
    good = [f"good-{i}" for i in range(20)]
    for i, event_id in enumerate(good):
        emulator.send(QUEUE, event_body(event_id))
        if i < len(invalid):
            emulator.send(QUEUE, invalid[i])
        if i < len(failing):
            emulator.send(QUEUE, event_body(failing[i], fail=True))
    config = setup.config(mns__dead_letter_queue=DLQ, worker__max_attempts=3)
    worker = Worker(config)
    dead_letter_file = tmp_path / "state-worker" / "dead-letter.jsonl"
    try:
        wait_until(lambda: dead_letter_file.exists() and len(dead_letter_file.read_text().splitlines()) == 4,
                   30, interval=0.2, message="four dead letters")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="the queue to drain")
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()
    assert set(setup.lines("done")) == set(good)
    records = [json.loads(line) for line in dead_letter_file.read_text().splitlines()]
    by_reason = {r["reason"]: [] for r in records}
    for r in records:
        by_reason[r["reason"]].append(r)
    assert sorted(r["body"] for r in by_reason["invalid"]) == sorted(invalid)
    assert all(r["error"] and r["message_id"] for r in records)
    assert sorted(r["event_id"] for r in by_reason["max_attempts"]) == failing
    assert all(r["attempts"] == 3 and "always fails" in r["error"] for r in by_reason["max_attempts"])
    # Exactly max_attempts tries each: not one more, not one fewer.
    starts = setup.lines("start")
    assert [starts.count(f) for f in failing] == [3, 3]
    # The dead-letter queue got the same records, raw body included.
    dlq = mns_queue(emulator, DLQ)
    sent = [json.loads(m.message_body) for m in dlq.batch_receive_message(16, 1)]
    assert sorted((r["reason"], r["body"]) for r in sent) == sorted((r["reason"], r["body"]) for r in records)
    assert depth(emulator, QUEUE) == {"visible": 0, "in_flight": 0, "delayed": 0}


@pytest.mark.slow
def test_deferral_is_not_an_attempt_and_resumes_only_the_deferring_plugin(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    second = tmp_path / "second.py"
    second.write_text(SECOND_PLUGIN.format(record=str(setup.record)))
    emulator.send(QUEUE, event_body("drain-1", defer_second=True))
    # max_attempts = 1: were a deferral counted, the event would be dead-lettered.
    worker = Worker(setup.config(worker__max_attempts=1,
                                 plugins__load=[str(setup.plugin), str(second)]))
    try:
        wait_until(lambda: len(setup.lines("second")) >= 3, 20, interval=0.1, message="three visits")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="the queue to drain")
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()
    assert setup.lines("done") == ["drain-1"]  # the recorder ran once: it was not resumed
    visits = [line.split() for line in setup.record.read_text().splitlines() if line.startswith("second")]
    assert len(visits) == 3
    assert visits[0][2] == "None" and visits[1][2] == visits[2][2] != "None"
    assert not (tmp_path / "state-worker" / "dead-letter.jsonl").exists()
