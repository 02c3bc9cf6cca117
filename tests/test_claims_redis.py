"""A shared store's claim on a running message (issue 22) ends with this worker's run of
it, whatever the outcome: a copy of the event elsewhere then runs at once instead of
coming back every `BUSY_RETRY_SECONDS` until the claim lapses. Real runners, the real MNS
SDK against the emulator, a real Redis server."""
from __future__ import annotations

import threading

import pluggy
import pytest

from ecs_worker import hookimpl
from ecs_worker.cloud.credentials import Credentials, StaticProvider
from ecs_worker.config import parse_config
from ecs_worker.consumer.admission import BUSY_RETRY_SECONDS
from ecs_worker.consumer.loop import Runner
from ecs_worker.plugin_host import hookspecs
from ecs_worker.plugin_host.context import Runtime
from ecs_worker.plugin_host.dispatch import Dispatcher
from ecs_worker.queue.source import MnsQueue
from redis_kit import fleet_name
from runner_kit import QUEUE, depth, emulator_state as short_visibility, event_body, wait_until

OTHER = "ecs-events-other"  # the same events reach a second worker through a second queue


@pytest.fixture
def emulator_state():
    state = short_visibility(visibility_timeout=2)
    state["queues"].append({"name": OTHER, "visibility_timeout": 2})
    return state


class Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []

    @hookimpl
    def on_event(self, event, ctx):
        self.ran.append(event.content.get("copy"))
        return "ok"


def _runner(emulator, state_dir, queue: str, store) -> tuple[Runner, Recorder]:
    config = parse_config({
        "mns": {"endpoint": emulator.mns_endpoint, "queue": queue, "wait_seconds": 1},
        "worker": {"state_dir": str(state_dir), "shutdown_timeout": 5},
        "plugins": {"call_timeout": 5},
    })
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    recorder = Recorder()
    pm.register(recorder, name="recorder")
    provider = StaticProvider(Credentials(emulator.access_key_id, emulator.access_key_secret))
    source = MnsQueue(emulator.mns_endpoint, queue, provider, 1)
    return Runner(config, Dispatcher(pm, Runtime(config), 5), source, store), recorder


def _store(server, fleet: str, state_dir):
    import redis

    from ecs_worker.state.store_redis import RedisStore

    return RedisStore(redis.Redis.from_url(server.url), fleet, state_dir)


def test_a_message_released_at_stop_frees_its_claim_so_a_copy_elsewhere_runs_at_once(
        emulator, tmp_path, redis_server):
    fleet = fleet_name()
    first, _ = _runner(emulator, tmp_path / "one", QUEUE, _store(redis_server, fleet, tmp_path / "one"))
    second, seen = _runner(emulator, tmp_path / "two", OTHER, _store(redis_server, fleet, tmp_path / "two"))
    first.check()
    second.check()
    starting, go_on = threading.Event(), threading.Event()
    real_start = first._handling._start

    def late_start(held):  # admitted (its event claimed), its handler not started before SIGTERM
        starting.set()
        go_on.wait(10)
        real_start(held)
    first._handling._start = late_start
    emulator.send(QUEUE, event_body("one-event", copy="A"))
    first.start()
    try:
        assert starting.wait(10)
        first.request_stop()
    finally:
        go_on.set()
    assert first.drain(10) and first.counts["handled"] == 0  # released, not run
    emulator.send(OTHER, event_body("one-event", copy="B"))  # the same event, delivered again
    second.start()
    try:
        # Not one BUSY_RETRY_SECONDS wait (nor one every 5 s until the claim lapses): at once.
        wait_until(lambda: seen.ran == ["B"], BUSY_RETRY_SECONDS - 1, message="the copy run")
        wait_until(lambda: depth(emulator, OTHER)["visible"] + depth(emulator, OTHER)["in_flight"] == 0, 5,
                   message="the copy deleted")
    finally:
        second.request_stop()
        assert second.drain(5)
    assert sum(depth(emulator).values()) == 1  # A is back in its queue, nothing lost
