"""The receive loop as a user and an operator see it: ready at once on a quiet queue, a
SIGTERM that does not wait out a long poll, fewer MNS requests per event while events
trickle in, and a count of every MNS request that matches what MNS bills."""
from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
import urllib.request

import pytest
from hypothesis import given, settings, strategies as st

from ecs_worker.cloud.credentials import Credentials, StaticProvider
from ecs_worker.consumer.gather import Gather
from ecs_worker.consumer.receiving import Receiving
from ecs_worker.cloud.apis import worker_mns_apis
from ecs_worker.queue.source import MnsQueue

APIS = worker_mns_apis()  # the registry's MNS APIs the worker calls
from runner_kit import QUEUE, Setup, Worker, depth, event_body, wait_until

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LONG_POLL = 20  # the default wait_seconds: what readiness and SIGTERM must not wait out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str) -> str:
    with OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def _body_or_nothing(port: int, path: str) -> str:
    try:
        return _get(port, path)
    except OSError:  # not listening yet (or 503)
        return ""


def _mns_requests(metrics_text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in
            re.finditer(r'^ecs_worker_mns_requests_total\{api="(\w+)"\} (\S+)$', metrics_text, re.M)}


def _billed(emulator) -> dict[str, int]:
    """MNS calls the emulator answered, by API, less the test's own sends."""
    return {k.split(":", 1)[1]: v for k, v in emulator.state()["calls"].items()
            if k.startswith("mns:") and k != "mns:SendMessage"}


@pytest.mark.slow
def test_ready_after_a_short_first_receive_and_sigterm_does_not_wait_out_the_long_poll(emulator, tmp_path):
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.2)
    port = _free_port()
    setup = Setup(tmp_path, emulator)
    started = time.monotonic()
    worker = Worker(setup.config(mns__wait_seconds=LONG_POLL, metrics__listen=f"127.0.0.1:{port}"),
                    env={"NOTIFY_SOCKET": str(notify_path)})
    try:
        got: list[str] = []

        def ready() -> bool:
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
            return any("READY=1" in m for m in got)

        wait_until(ready, 15, message="READY=1")
        took = time.monotonic() - started
        # Before: READY came after the first long poll ended (20 s on an empty queue).
        assert took < LONG_POLL / 2, f"ready after {took:.1f}s"
        health = json.loads(_get(port, "/healthz"))
        assert health["polled"] is True and health["status"] == "ok", health
        # A message is received, handled and deleted: nothing is in flight afterwards.
        emulator.send(QUEUE, event_body("before-stop"))
        wait_until(lambda: setup.lines() == ["before-stop"], 10, message="the event handled")
        wait_until(lambda: depth(emulator)["in_flight"] == 0, 5, message="its delete")
        time.sleep(0.5)  # the worker is back inside a 20 s long poll
        worker.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert worker.wait(15) == 0, worker.output()
        took = time.monotonic() - stopped
    finally:
        worker.stop()
        sock.close()
    # Before: the worker waited for its long poll to end (up to 20 s + slack).
    assert took < 2.5, f"exit took {took:.1f}s"
    assert "in flight at shutdown" not in worker.output()
    q = depth(emulator)
    assert q["visible"] == 0 and q["in_flight"] == 0, q


def test_an_abandoned_receive_releases_what_it_brings_at_once(emulator):
    """What a receive abandoned at shutdown still brings is made visible again in about a
    second, not hidden for the queue's visibility timeout (10 s here)."""
    creds = Credentials(emulator.access_key_id, emulator.access_key_secret)
    source = MnsQueue(emulator.mns_endpoint, QUEUE, StaticProvider(creds), wait_seconds=5)
    stopping = threading.Event()
    receiving = Receiving(source, wait_seconds=5, gather_seconds=0, stopping=stopping)
    receiving.receive(16)  # the first receive (short) is done: the next one long-polls
    result: list = []
    poll = threading.Thread(target=lambda: result.append(receiving.receive(16)))
    poll.start()
    try:
        wait_until(lambda: receiving.idle(receiver_alive=True), 5, message="the long poll under way")
        emulator.send(QUEUE, event_body("late"))
        poll.join(5)
        assert result == [[]]  # not handed on: the worker is stopping
        wait_until(lambda: depth(emulator)["visible"] == 1, 3, interval=0.1, message="the message released")
    finally:
        stopping.set()
        poll.join(6)


@pytest.mark.slow
def test_a_trickle_costs_fewer_requests_per_event_and_the_count_matches_what_mns_bills(emulator, tmp_path):
    port = _free_port()
    setup = Setup(tmp_path, emulator)
    # Long polls, so that no receive starts while the counts are compared.
    worker = Worker(setup.config(metrics__listen=f"127.0.0.1:{port}", mns__wait_seconds=LONG_POLL))
    try:
        wait_until(lambda: '"polled": true' in _body_or_nothing(port, "/healthz"), 15, message="ready")
        time.sleep(0.3)  # into its first long poll
        emulator.reset_calls()
        before = _mns_requests(_get(port, "/metrics"))
        assert set(before) == set(APIS)  # every API's counter exists from the start, at 0 or more
        n, rate = 120, 60.0  # one message at a time, as CloudMonitor sends them
        start = time.monotonic()
        for i in range(n):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            emulator.send(QUEUE, event_body(f"trickle-{i:03d}"))
        wait_until(lambda: len(setup.lines()) == n, 20, message="every event handled")
        wait_until(lambda: depth(emulator)["in_flight"] == 0, 5, message="every delete")

        def counted() -> dict[str, float]:
            now = _mns_requests(_get(port, "/metrics"))
            return {api: now[api] - before[api] for api in APIS if now[api] - before[api]}

        time.sleep(0.3)  # back into a long poll
        # The worker's own count equals the emulator's.
        wait_until(lambda: counted() == _billed(emulator), 5, interval=0.2,
                   message="ecs_worker_mns_requests_total to match the emulator's count")
        billed = _billed(emulator)
    finally:
        worker.finish(15)
    per_event = sum(billed.values()) / n
    # Without gathering each receive and each delete carries about one message (~2 per event).
    assert per_event <= 0.8, billed
    assert sorted(setup.lines()) == [f"trickle-{i:03d}" for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.lists(st.tuples(st.integers(0, 16), st.integers(1, 16),
                                           st.floats(0.0005, 30)), min_size=1, max_size=30))
def test_a_gather_pause_is_bounded_and_only_follows_a_partial_batch(max_seconds, receives):
    gather, now = Gather(max_seconds), 1000.0
    for got, asked, later in receives:
        got = min(got, asked)
        now += later
        pause = gather.pause(got, asked, now)
        assert 0 <= pause <= max_seconds
        if got == 0 or got == asked:
            assert pause == 0  # an empty poll or a full batch (a backlog): receive again at once


def test_a_slow_trickle_or_a_lone_event_never_waits():
    gather = Gather(0.1)
    assert gather.pause(1, 16, 100.0) == 0  # the first event after a quiet spell
    for i in range(1, 10):  # 2 events/s: a 0.1 s pause would gather nothing more
        assert gather.pause(1, 16, 100.0 + i * 0.5) == 0


def test_a_faster_trickle_pauses_less():
    slow, fast = Gather(0.1), Gather(0.1)
    for i in range(1, 10):
        slow_pause = slow.pause(2, 16, i * 0.1)  # 20 messages/s
        fast_pause = fast.pause(8, 16, i * 0.01)  # 800 messages/s
    assert slow_pause == 0.1  # capped: 14 more would take 0.7 s
    assert fast_pause == pytest.approx(0.01, rel=0.2)  # 8 more arrive in about 10 ms
