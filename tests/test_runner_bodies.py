"""Bodies as real senders write them (issue 17, item 9), through a real worker: base64
broken into lines (LF, CRLF) and a UTF-8 byte order mark are events, not poison; a
re-sent deferral first deferred more than 30 days ago is dead-lettered, not re-sent again."""
from __future__ import annotations

import base64
import json
import time

import pytest

from ecs_worker.events.wrapper import wrap
from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


def test_line_broken_base64_and_a_byte_order_mark_are_events(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    mime = base64.encodebytes(event_body("b64-lf").encode()).decode()  # 76 columns, LF
    assert mime.count("\n") > 2
    emulator.send(QUEUE, mime)
    emulator.send(QUEUE, base64.encodebytes(event_body("b64-crlf").encode()).decode().replace("\n", "\r\n"))
    emulator.send(QUEUE, "\ufeff" + event_body("bom-json"))
    emulator.send(QUEUE, base64.b64encode(b"\xef\xbb\xbf" + event_body("bom-in-b64").encode()).decode())
    worker = Worker(setup.config())
    try:
        wait_until(lambda: len(setup.lines("done")) == 4, 20, message="all four handled")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="all deleted")
    finally:
        worker.finish(20)
    assert sorted(setup.lines("done")) == ["b64-crlf", "b64-lf", "bom-in-b64", "bom-json"]
    assert not (tmp_path / "state-worker" / "dead-letter.jsonl").exists()


def test_a_wrapper_past_thirty_days_is_dead_lettered(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    now = time.time()
    old = now - 31 * 86400
    body = event_body("too-long", defer=3600).encode()
    emulator.send(QUEUE, wrap(body, "too-long|Test:Event|", {"recorder": old}, 0, old, now).body)
    worker = Worker(setup.config())
    try:
        path = tmp_path / "state-worker" / "dead-letter.jsonl"
        wait_until(path.exists, 20, message="the dead letter")
        wait_until(lambda: sum(depth(emulator).values()) == 0, 10, message="deleted, not re-sent")
    finally:
        worker.finish(20)
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["reason"] == "deferred_too_long" and "over 30 days" in record["error"]
    assert setup.lines("start") == []  # no plugin ran
    assert emulator.state()["calls"].get("mns:SendMessage", 0) == 0
