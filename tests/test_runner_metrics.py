"""The runner in-process against the emulator: the metrics an operator graphs and alerts on."""
from __future__ import annotations

import time

import pluggy
import pytest

from ecs_worker import hookimpl
from ecs_worker.plugin_host import hookspecs
from ecs_worker.observability import metrics
from ecs_worker.config import parse_config
from ecs_worker.plugin_host.context import Runtime
from ecs_worker.cloud.credentials import Credentials, StaticProvider
from ecs_worker.plugin_host.dispatch import Dispatcher
from ecs_worker.consumer.loop import Runner
from ecs_worker.consumer.settle import retry_backoff
from ecs_worker.queue.source import MnsQueue
from ecs_worker.state.store import Store
from runner_kit import QUEUE, depth, emulator_state as short_visibility, event_body, wait_until


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


class Acting:
    """Acts on `act` events through the gateway, fails `fail` events."""

    @hookimpl
    def on_event(self, event, ctx):
        if event.content.get("fail"):
            raise RuntimeError("boom")
        if event.content.get("act"):
            return ctx.act("StartInstance", event.instance_id, lambda: "started")
        return None


def _runner(emulator, tmp_path) -> Runner:
    config = parse_config({
        "mns": {"endpoint": emulator.mns_endpoint, "queue": QUEUE, "wait_seconds": 1},
        "worker": {"state_dir": str(tmp_path), "max_attempts": 5, "retry_base_seconds": 30},
        "plugins": {"call_timeout": 5},
    })
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(Acting(), name="acting")
    runtime = Runtime(config)
    metrics.watch_gateway(runtime.gateway)
    provider = StaticProvider(Credentials(emulator.access_key_id, emulator.access_key_secret))
    source = MnsQueue(emulator.mns_endpoint, QUEUE, provider, 1)
    return Runner(config, Dispatcher(pm, runtime, 5), source, Store(tmp_path))


def test_metrics_count_outcomes_actions_errors_and_lag(emulator, tmp_path):
    def sample(key):
        return metrics.value(key[0], dict(key[1:]))

    before = {k: sample(k) for k in [
        ("ecs_worker_events_total", ("name", "Test:Event"), ("outcome", "handled")),
        ("ecs_worker_events_total", ("name", "Test:Event"), ("outcome", "failed")),
        ("ecs_worker_events_total", ("name", ""), ("outcome", "invalid")),
        ("ecs_worker_actions_total", ("plugin", "acting"), ("action", "StartInstance"), ("result", "ok")),
        ("ecs_worker_plugin_errors_total", ("plugin", "acting")),
        ("ecs_worker_dead_letters_total", ("reason", "invalid")),
        ("ecs_worker_event_lag_seconds_count",),
    ]}
    emulator.send(QUEUE, event_body("m-act", act=True))
    emulator.send(QUEUE, event_body("m-fail", fail=True))
    emulator.send(QUEUE, "not an event")
    runner = _runner(emulator, tmp_path)
    runner.check()
    runner.start()
    try:
        wait_until(lambda: runner.counts["handled"] == 1 and runner.counts["failed"] == 1
                   and runner.counts["invalid"] == 1, 10, message="three outcomes")
        assert metrics.last_poll_completed > time.monotonic() - 5
        assert metrics.value("ecs_worker_last_poll_timestamp_seconds") > time.time() - 5
        wait_until(lambda: metrics.value("ecs_worker_inflight") == 0, 5, message="nothing held")
    finally:
        runner.request_stop()
        assert runner.drain(5)
    after = {k: sample(k) for k in before}
    assert [after[k] - before[k] for k in before] == [1, 1, 1, 1, 1, 1, 1]
    # The failed one waits for its backoff (30 s base) in the queue, hidden, not lost.
    assert depth(emulator) == {"visible": 0, "in_flight": 1, "delayed": 0}


def test_retry_backoff_grows_with_attempts_and_is_capped():
    import random

    rng = random.Random(7)
    firsts = [retry_backoff(1, 10, 900, rng) for _ in range(50)]
    assert all(5 <= d <= 10 for d in firsts)
    assert all(450 <= retry_backoff(12, 10, 900, rng) <= 900 for _ in range(50))
    assert retry_backoff(1, 1, 1, rng) == 1  # never below MNS's minimum visibility


@pytest.mark.slow
def test_running_worker_serves_its_metrics_and_health(emulator, tmp_path):
    import json
    import socket
    import urllib.request

    from runner_kit import Setup, Worker

    with socket.socket() as probe:  # a free port, then let the worker bind it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    setup = Setup(tmp_path, emulator)
    for i in range(5):
        emulator.send(QUEUE, event_body(f"scrape-{i}"))
    worker = Worker(setup.config(metrics__listen=f"127.0.0.1:{port}"))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(path):
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()

    def scraped():
        try:
            return 'ecs_worker_events_total{name="Test:Event",outcome="handled"} 5.0' in get("/metrics")[1]
        except OSError:
            return False

    try:
        wait_until(scraped, 15, interval=0.2, message="five handled events in /metrics")
        status, body = get("/healthz")
        assert status == 200 and json.loads(body)["polled"] is True
        worker.signal()
        assert worker.wait(20) == 0
    finally:
        worker.stop()
