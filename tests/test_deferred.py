"""Long deferrals (issue 11, item 6): past `resend_deferrals_after` the message is re-sent
with DelaySeconds and deleted, not held; the wrapper carries key, resume list and
attempts, so any worker continues it, and replay shows the original event."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ecs_worker.events.wrapper import FORGED, MAX_DELAY_SECONDS, SIGNED, UNSIGNED, unwrap, verdict, wrap
from ecs_worker.trust.fleet_key import Signer
from ecs_worker.events.event import parse_event
from runner_kit import QUEUE, Setup, Worker, depth, emulator_state as short_visibility, event_body, wait_until


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


SIGNER = Signer(["k" * 32])


def test_a_wrapper_round_trips_and_parse_event_sees_the_original():
    original = event_body("wrapped-1").encode()
    since = time.time() - 60
    copy = wrap(original, "wrapped-1|Test:Event|", {"recorder": since}, 2, since, time.time() + 3600)
    assert 3590 <= copy.delay <= 3600
    inner = unwrap(copy.body)
    assert inner is not None and inner.body == original and inner.key == "wrapped-1|Test:Event|"
    assert inner.resume == {"recorder": since} and inner.attempts == 2
    assert parse_event(copy.body) == parse_event(original)
    # A plugin's saved state travels whole only when signed; unsigned, only its name does.
    state = {"recorder": since, "~state": {"recorder": {"groups": ["rsp-1"]}}}
    assert unwrap(wrap(original, "k", state, 0, 0, 0, signer=SIGNER).body).resume == state
    assert unwrap(wrap(original, "k", state, 0, 0, 0).body).resume == {"recorder": since,
                                                                       "~state": {"recorder": None}}
    assert wrap(original, "k", None, 0, 0, time.time() + 30 * 86400).delay == MAX_DELAY_SECONDS
    # Never due later than 30 days after the first deferral.
    assert unwrap(wrap(original, "k", None, 0, since, since + 40 * 86400).body).until == since + 30 * 86400


def test_a_signed_wrapper_verifies_and_any_change_to_it_does_not():
    body = wrap(event_body("signed").encode(), "signed|Test:Event|", {"recorder": 1.0}, 1, 1.0, 2.0,
                signer=SIGNER).body
    assert verdict(unwrap(body), SIGNER) == SIGNED
    assert verdict(unwrap(body), Signer(["j" * 32, "k" * 32])) == SIGNED  # rotation: any listed key verifies
    assert verdict(unwrap(body), Signer(["j" * 32])) == FORGED
    assert verdict(unwrap(body), None) == UNSIGNED
    for old, new in (('"attempts":1', '"attempts":0'), ("signed|", "other|"), ("i-bp1test", "i-attacker")):
        assert old in body
        assert verdict(unwrap(body.replace(old, new, 1)), SIGNER) == FORGED


@pytest.mark.parametrize("body", [
    '{"ecs_worker_deferred": {"key": "k"}}',  # no body
    '{"ecs_worker_deferred": {"key": 5}, "body": "{}"}',
    '{"ecs_worker_deferred": {"key": "k", "attempts": -1}, "body": "{}"}',
    '{"ecs_worker_deferred": {"key": "k", "resume": ["p"]}, "body": "{}"}',
    '{"ecs_worker_deferred": {"key": "k", "until": 1e999}, "body": "{}"}',
    '{"ecs_worker_deferred": [' * 5000,
    '{"other": 1}',
])
def test_anything_but_a_well_formed_wrapper_is_an_ordinary_body(body):
    assert unwrap(body) is None


def test_replay_shows_the_original_event_of_a_wrapper(tmp_path):
    copy = wrap(event_body("replayed", fail=False).encode(), "replayed|Test:Event|", None, 0, 0, 0)
    path = tmp_path / "wrapped.json"
    path.write_text(copy.body)
    out = subprocess.run([sys.executable, "-m", "ecs_worker", "replay", str(path), "--dry-run", "--json"],
                         capture_output=True, text=True, timeout=60)
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["id"] == "replayed" and row["name"] == "Test:Event" and row["outcome"] != "invalid"


def _queued(emulator) -> list[tuple[str, float]]:
    world = emulator.world
    with world.lock:
        return [(m.body, m.visible_at) for m in world.queues[QUEUE].msgs.values()]


@pytest.mark.slow
def test_a_long_deferral_is_re_sent_with_a_delay_and_any_worker_continues_it(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    emulator.send(QUEUE, event_body("later", defer=3600))
    emulator.send(QUEUE, event_body("much-later", defer=10 * 86400))
    config = setup.config(worker__resend_deferrals_after=60)
    worker = Worker(config)
    try:
        wait_until(lambda: depth(emulator) == {"visible": 0, "in_flight": 0, "delayed": 2}, 15,
                   message="both re-sent, originals deleted")
        now = time.time()
        copies = {}
        for body, visible_at in _queued(emulator):
            inner = unwrap(body)
            assert inner is not None
            copies[parse_event(inner.body).id] = (inner, visible_at)
        later, visible_at = copies["later"]
        assert later.key == "later|Test:Event|" and later.attempts == 0
        assert set(later.resume) == {"recorder"} and later.resume["recorder"] == pytest.approx(now, abs=30)
        assert visible_at - now == pytest.approx(3600, abs=30) and later.until == pytest.approx(visible_at, abs=2)
        much, visible_at = copies["much-later"]
        # Over 7 days: the first hop is DelaySeconds' maximum; `until` keeps the real time.
        assert visible_at - now == pytest.approx(MAX_DELAY_SECONDS, abs=30)
        assert much.until - now == pytest.approx(10 * 86400, abs=30)
        assert setup.lines("deferred") == ["later", "much-later"] or \
            sorted(setup.lines("deferred")) == ["later", "much-later"]

        # Its time has come (the copy as MNS would deliver it): another worker continues it,
        # calling only the plugin that deferred, which sees when it first deferred.
        due = wrap(later.body, later.key, later.resume, later.attempts, later.since, time.time())
        emulator.send(QUEUE, due.body)
        # One that arrives early (a wait longer than a hop): it waits on, runs nothing yet.
        early = wrap(much.body, much.key, much.resume, much.attempts, much.since, time.time() + 4)
        emulator.send(QUEUE, early.body)
        other = Worker(setup.config("other", worker__resend_deferrals_after=60))
        try:
            wait_until(lambda: setup.lines("done") == ["later"], 15, message="the due one continued")
            assert "much-later" not in setup.lines("start")[2:]
            wait_until(lambda: setup.lines("done") == ["later", "much-later"], 20, message="the early one, in time")
            wait_until(lambda: sum(depth(emulator).values()) == 2, 10, message="the continued ones deleted")
            other.signal()
            assert other.wait(20) == 0
        finally:
            other.stop()
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()
    assert setup.lines("start") == ["later", "much-later", "later", "much-later"] or \
        sorted(setup.lines("start")) == ["later", "later", "much-later", "much-later"]


@pytest.mark.slow
def test_a_short_deferral_is_held_as_before(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    emulator.send(QUEUE, event_body("soon", defer=1))
    worker = Worker(setup.config(worker__resend_deferrals_after=60))
    try:
        wait_until(lambda: setup.lines("done") == ["soon"], 15, message="the deferred event, later")
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()
    assert not any(unwrap(body) for body, _ in _queued(emulator))
