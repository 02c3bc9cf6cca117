"""A shared store's claim on a running message (issue 22) ends with this worker's run of
it, whatever the outcome: a copy of the event elsewhere then runs at once instead of
coming back every `BUSY_RETRY_SECONDS` until the claim lapses. Real runners, the real MNS
SDK against the emulator, a real Redis server."""
from __future__ import annotations

import threading
import time

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


def _runner(emulator, state_dir, queue: str, store, plugin=None) -> tuple[Runner, Recorder]:
    config = parse_config({
        "mns": {"endpoint": emulator.mns_endpoint, "queue": queue, "wait_seconds": 1},
        "worker": {"state_dir": str(state_dir), "shutdown_timeout": 5},
        "plugins": {"call_timeout": 5},
    })
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    recorder = plugin or Recorder()
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


class SavingDeferrer:
    """Defers each event once, with a saved state: the wait is re-sent as a new message."""

    def __init__(self) -> None:
        self.ran: list[float] = []

    @hookimpl
    def on_event(self, event, ctx):
        if ctx.deferred_since is None:
            ctx.save_state({"step": 1})
            ctx.defer(DEFER_SECONDS, "test deferral")
            return "deferred"
        self.ran.append(time.monotonic())
        return "continued"


DEFER_SECONDS = 3


def test_a_re_sent_deferrals_original_back_after_a_lost_delete_does_not_hold_up_its_copy(
        emulator, tmp_path, redis_server):
    """The original of a re-sent deferral, back after a lost delete, is a duplicate (its id
    is settled) — but admission had claimed its event for it: the copy must still run when
    due, not every 5 s after until that claim lapses."""
    plugin = SavingDeferrer()
    runner, _ = _runner(emulator, tmp_path, QUEUE, _store(redis_server, fleet_name(), tmp_path), plugin)
    runner.check()
    real_delete, lost = runner.source.delete_batch, []

    def lose_the_first_delete(handles):
        if not lost:
            lost.append(handles)
            return {}  # as if MNS never got it: the original comes back
        return real_delete(handles)
    runner.source.delete_batch = lose_the_first_delete
    emulator.send(QUEUE, event_body("deferred-once"))
    runner.start()
    try:
        wait_until(lambda: lost, 10, message="the original's delete lost")
        deferred = time.monotonic()
        wait_until(lambda: runner.counts["duplicate"] == 1, 10, message="the original back as a duplicate")
        wait_until(lambda: plugin.ran, DEFER_SECONDS + BUSY_RETRY_SECONDS, message="the copy run")
        assert plugin.ran[0] - deferred < DEFER_SECONDS + BUSY_RETRY_SECONDS - 1  # no wait on a claim
        wait_until(lambda: sum(depth(emulator).values()) == 0, 5, message="all deleted")
    finally:
        runner.request_stop()
        assert runner.drain(5)
