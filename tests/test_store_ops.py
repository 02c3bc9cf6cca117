"""Operating the shared store against a real Redis server: choosing it by URL, its password
from a file (never in the URL, never in a log), `doctor`'s check, and failing safe while
the server is away — `/healthz` says why — then carrying on by itself."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from ecs_worker.config import ConfigError, parse_config
from ecs_worker.state.store_open import open_store, shown
from ecs_worker.state.store_probe import probe
from ecs_worker.state.store_types import Slot, StoreError
from redis_kit import BINARY, fleet_name, free_port


def config(tmp_path, **worker):
    return parse_config({"worker": {"state_dir": str(tmp_path / "state"), **worker}}, "<test>")


def test_the_store_is_chosen_by_url_and_sqlite_stays_the_default(redis_server, tmp_path):
    from ecs_worker.state.store import Store
    from ecs_worker.state.store_redis import RedisStore

    default = open_store(config(tmp_path))
    assert isinstance(default, Store) and not default.shared
    shared = open_store(config(tmp_path, store=redis_server.url, store_fleet=fleet_name()))
    assert isinstance(shared, RedisStore) and shared.shared
    assert shared.take_budgets([Slot("x", 1, 60)], "t").blocked is None
    with pytest.raises(ConfigError, match="use one of"):
        open_store(config(tmp_path, store="http://127.0.0.1:6379"))


def test_the_password_comes_from_a_file_and_never_shows(tmp_path):
    if BINARY is None:
        pytest.skip("no redis-server")
    port = free_port()
    proc = subprocess.Popen([BINARY, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--requirepass", "s3cret-pass", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        secret = tmp_path / "redis-password"
        secret.write_text("s3cret-pass\n")
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:  # wait for the server
            ok, found, _ = probe(config(tmp_path, store=url, store_password_file=str(secret)))
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert ok, found
        refused, found, fix = probe(config(tmp_path, store=url))  # no password: refused, said so
        assert not refused and "s3cret" not in found + fix
        with pytest.raises(ConfigError, match="no password in the URL"):
            open_store(config(tmp_path, store=f"redis://:s3cret-pass@127.0.0.1:{port}/0"))
        assert shown("redis://user:s3cret-pass@10.0.0.5:6379/0") == "redis://10.0.0.5:6379/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_doctor_checks_the_store(redis_server, tmp_path):
    ok, found, _ = probe(config(tmp_path, store=redis_server.url, store_fleet=fleet_name()))
    assert ok and "writable" in found and "maxmemory-policy" in found and "clock" in found
    down = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    ok, found, fix = probe(config(tmp_path, store=down))
    assert not ok and "ConnectionError" in found and "network" in fix
    assert time.monotonic() - started < 30
    ok, found, _ = probe(config(tmp_path))
    assert ok and "SQLite" in found


def test_an_unreachable_store_fails_safe_healthz_says_why_and_it_recovers(own_redis, tmp_path, monkeypatch):
    from ecs_worker.observability import health, metrics
    from ecs_worker.plugin_host.context import Runtime
    from ecs_worker.observability.health import serve

    # /healthz reads process-wide state that other tests in this process may have left (a
    # poll long ago reads as "stalled", which outranks the store): a fresh, polling worker.
    monkeypatch.setattr(metrics, "last_poll_completed", time.monotonic())
    monkeypatch.setattr(health, "dead_threads", [])
    monkeypatch.setattr(health, "stuck_plugins", {})
    cfg = config(tmp_path, store=own_redis.url, store_fleet=fleet_name())
    store = open_store(cfg)
    runtime = Runtime(cfg, {"budgeted": {}}, dry_run=False)
    runtime.attach_store(store)
    ctx = runtime.context("budgeted")
    minute = ctx.budget("all", 5, 60)
    server = serve("127.0.0.1:0", 20, store.problem)
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    try:
        assert ctx.take(minute)
        own_redis.stop()
        refused = ctx.take(minute)  # nothing budgeted without its budget
        assert not refused and refused.blocked == "store" and refused.wait > 0
        with pytest.raises(StoreError):
            store.take(["k"], 5)
        status, body = _get(url)
        assert status == 503 and body["status"] == "store_unreachable" and "ConnectionError" in body["store"]
        own_redis.start()
        deadline = time.monotonic() + 10
        while _get(url)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        status, body = _get(url)
        assert (status, body["status"]) == (200, "ok") and "store" not in body
        assert ctx.take(minute)  # and the budget kept what it had (append-only file)
        taken = sum(1 for _ in range(5) if ctx.take(minute))
        assert taken == 3  # 5 a minute: 2 taken before, 3 left
    finally:
        server.shutdown()
        store.close()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_cluster_that_cannot_be_reached_at_start_is_a_retryable_failure(tmp_path):
    """A cluster client connects as it is made: unreachable then is `StoreUnavailable` (run
    exits 1, and systemd restarts it), never a configuration error (exit 2: left down)."""
    from ecs_worker.state.store_types import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="redis\\+cluster://127.0.0.1"):
        open_store(config(tmp_path, store=f"redis+cluster://127.0.0.1:{free_port()}"))


def test_while_the_shared_store_is_away_only_spot_notices_run(tmp_path):
    """Admission with a Redis store that cannot be reached: a spot interruption notice runs
    (removing a reclaimed instance needs no budget); any other event goes back, uncounted,
    for a few seconds; nothing is dropped."""
    from ecs_worker.consumer.admission import Admission
    from ecs_worker.consumer.held import hold
    from ecs_worker.consumer.settle_commands import LATER, RESULT
    from ecs_worker.queue.source import Message
    from ecs_worker.testing import body, interruption, state_change

    store = open_store(config(tmp_path, store=f"redis://127.0.0.1:{free_port()}/0"))
    bodies = {"spot": body(interruption("i-spot")), "stop": body(state_change("i-web", "Stopped"))}
    messages = [Message(name, f"handle-{name}", text.encode(), 1, 0, 0) for name, text in bodies.items()]
    decided = {h.message.id: (kind, result, h.later)
               for h, kind, result in Admission(store, 5, hold=60).decide(hold({}, messages, 30))}
    assert decided["spot"][:2] == (RESULT, None)  # run it
    kind, result, (seconds, why) = decided["stop"]
    assert (kind, result) == (LATER, None) and 1 <= seconds <= 10 and "unreachable" in why
    assert store.problem() and "ConnectionError" in store.problem()


def test_a_quarantine_child_reaches_the_shared_store_through_a_client_of_its_own(redis_server, tmp_path):
    """A suspect runs in a forked child (`quarantine.py`): its plugin's `ctx` store calls go
    to the same Redis data through a new client and connection pool, never the parent's
    (a socket shared across the fork would interleave both processes' replies)."""
    import os

    from ecs_worker import hookimpl
    from ecs_worker.consumer import quarantine
    from ecs_worker.plugin_host.outcomes import HANDLED
    from ecs_worker.testing import Harness, state_change

    class Keeper:
        name = "keeper"

        @hookimpl
        def on_state_change(self, event, ctx):
            pool = ctx._runtime.store.client.connection_pool
            ctx.remember("seen", {"pid": os.getpid(), "pool": id(pool)}, ttl=60)
            return "kept"

    settings = {"worker": {"state_dir": str(tmp_path / "state"), "store": redis_server.url,
                           "store_fleet": fleet_name()}}
    with Harness(Keeper(), dry_run=False, settings=settings) as harness:
        parent = harness.runtime.store  # opened here, as `run` attaches it, before any fork
        parent_pool = parent.client.connection_pool
        parent.put_state("warm", 1, ttl=60)  # the parent's pool holds a live connection
        result, crashed = quarantine.run(harness.dispatcher, state_change("i-q", "Stopped"), None, lambda: None)
        assert (result.outcome, crashed) == (HANDLED, False), result.error
        ctx = harness.runtime.context("keeper")
        seen = ctx.recall("seen")
        assert seen["pid"] != os.getpid() and seen["pool"] != id(parent_pool)
        assert harness.runtime.store is parent and parent.get_state("warm") == 1  # the parent's own, intact
