"""sd_notify: datagrams on a real Unix socket, as systemd would receive them."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from ecs_worker.observability.notify import SystemdNotifier, watchdog_interval
from runner_kit import QUEUE, Setup, Worker, event_body, wait_until


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def _drain(sock) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            return out


def test_notifier_sends_to_a_path_socket(notify_socket):
    path, sock = notify_socket
    n = SystemdNotifier(str(path))
    assert n.ready("up") and n.watchdog() and n.stopping()
    assert _drain(sock) == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_understands_abstract_namespace_sockets():
    name = f"ecs-worker-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(1)
    try:
        assert SystemdNotifier("@" + name).status("hello")
        assert sock.recv(4096) == b"STATUS=hello"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_quiet_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not SystemdNotifier().enabled and SystemdNotifier().ready() is False
    # A vanished socket is logged, never raised.
    assert SystemdNotifier(str(tmp_path / "gone.sock")).watchdog() is False


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "90000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 45
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


@pytest.mark.slow
def test_worker_reports_ready_watchdog_status_and_stopping(emulator, tmp_path, notify_socket):
    path, sock = notify_socket
    setup = Setup(tmp_path, emulator)
    for i in range(3):
        emulator.send(QUEUE, event_body(f"notify-{i}"))
    worker = Worker(setup.config(), env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
    got: list[str] = []
    try:
        wait_until(lambda: got.extend(_drain(sock)) or any("READY=1" in m for m in got), 15,
                   message="READY=1")
        wait_until(lambda: len(setup.lines()) == 3, 10, message="events handled")
        wait_until(lambda: got.extend(_drain(sock)) or any("handled 3" in m for m in got), 15,
                   message="a STATUS with the counters")
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        got.extend(_drain(sock))
    finally:
        worker.stop()
    ready = next(i for i, m in enumerate(got) if "READY=1" in m)
    assert any(m == "WATCHDOG=1" for m in got[ready:])
    assert any(m.startswith("STATUS=handled") for m in got)
    assert any(m.startswith("STOPPING=1") for m in got)


def test_a_listener_that_stops_reading_never_blocks_the_sender(tmp_path):
    import socket
    import threading

    from ecs_worker.observability.notify import SystemdNotifier

    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)  # bound, never read: its queue fills up
        notifier = SystemdNotifier(path)
        results: list[bool] = []
        sender = threading.Thread(target=lambda: results.extend(
            notifier.status(f"handled {i}") for i in range(2000)), daemon=True)
        sender.start()
        sender.join(5)
        assert not sender.is_alive(), "sd_notify blocked on a listener that stopped reading"
        assert results[0] is True and results[-1] is False  # dropped once full, not blocked
        notifier.close()
