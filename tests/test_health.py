"""/healthz reflects the consume loop's progress, not a constant (the peer's classic trap)."""
import time

from ecs_worker.observability import health, metrics
from ecs_worker.testing import run_emulator
from runner_kit import QUEUE, Setup, Worker, emulator_state, event_body, free_port, get, wait_until


def test_health_turns_503_when_polls_stop_completing_and_recovers(monkeypatch):
    server = health.serve("127.0.0.1:0", wait_seconds=1)  # limit: 2 * 1 + 5 = 7 s
    port = server.server_address[1]
    try:
        monkeypatch.setattr(metrics, "last_poll_completed", time.monotonic())
        status, body = get(port, "/healthz")
        assert status == 200 and body["status"] == "ok" and body["limit_seconds"] == 7
        monkeypatch.setattr(metrics, "last_poll_completed", time.monotonic() - 8)
        status, body = get(port, "/healthz")
        assert status == 503 and body["status"] == "stalled" and body["seconds_since_poll"] >= 8
        assert get(port, "/metrics")[0] == 200 and get(port, "/nope")[0] == 404
    finally:
        server.shutdown()


def test_running_worker_reports_unhealthy_while_mns_fails_then_healthy_again(tmp_path):
    port = free_port()
    with run_emulator(emulator_state()) as emu:
        setup = Setup(tmp_path, emu)
        emu.send(QUEUE, event_body("h-1"))
        worker = Worker(setup.config(metrics__listen=f"127.0.0.1:{port}"))
        try:
            wait_until(lambda: setup.lines() == ["h-1"], 20, message="first event handled")
            assert get(port, "/healthz")[0] == 200
            emu.set_faults({"mns": {"error_rate": 1.0, "error_code": "InternalError", "error_status": 500}})
            wait_until(lambda: get(port, "/healthz")[0] == 503, 20, interval=0.5,
                       message="/healthz to report the stalled loop")
            assert worker.alive()  # transient faults never kill the process
            emu.set_faults({"mns": {}})
            wait_until(lambda: get(port, "/healthz")[0] == 200, 40, interval=0.5,
                       message="/healthz to recover")
            emu.send(QUEUE, event_body("h-2"))
            wait_until(lambda: setup.lines() == ["h-1", "h-2"], 20, message="events flow again")
            worker.signal()
            assert worker.wait(20) == 0
        finally:
            worker.stop()
