"""Every outcome line at INFO says why: each plugin's reason (`ctx.skip` for an ignored event,
the deferral's reason and its delay), through the real dispatcher and the `log` plugin, with
the restart plugin reading the emulator through the real SDK."""
from __future__ import annotations

import json
import logging
import textwrap

import pytest

from ecs_worker.config import parse_config
from ecs_worker.plugin_host.context import Runtime
from ecs_worker.plugin_host.dispatch import Dispatcher
from ecs_worker.events.event import parse_event
from ecs_worker.plugin_host.manager import load_plugins
from ecs_worker.testing import run_emulator

REGION = "cn-hangzhou"
KEY = {"access_key_id": "LTAIreasons00001", "access_key_secret": "reasons-test-secret-0001"}
FLEET = {"region": REGION, "account_id": "1690000000000000", "credentials": [KEY],
         "start_delay_seconds": 0, "stop_delay_seconds": 0,
         "instances": [{"id": "i-tagged", "status": "Stopped", "tags": {"ecs-worker:auto-restart": "true"}},
                       {"id": "i-plain", "status": "Stopped", "tags": {}}]}


def state_change(iid: str, state: str) -> object:
    return parse_event(json.dumps({"id": f"e-{iid}-{state}", "name": "Instance:StateChange", "regionId": REGION,
                                   "content": {"resourceId": iid, "state": state}}))


@pytest.fixture
def worker(tmp_path, caplog):
    quiet = tmp_path / "quiet.py"  # a third-party plugin that ignores without saying why
    quiet.write_text(textwrap.dedent("""
        from ecs_worker import hookimpl

        @hookimpl
        def on_state_change(event, ctx):
            return None
    """))
    with run_emulator(FLEET) as emu:
        config = parse_config({
            "cloud": {"region": REGION, "endpoint": emu.endpoint, "protocol": "http"},
            "credentials": KEY, "worker": {"state_dir": str(tmp_path / "state")},
            "plugins": {"load": [str(quiet)], "disabled": ["hello", "slb", "maintenance", "webhook"],
                        "restart": {"grace_seconds": 45}}})
        plugins = load_plugins(config)
        dispatcher = Dispatcher(plugins.pm, Runtime(config, plugins.configs, dry_run=False), 10)
        dispatcher.startup()

        def settle(event) -> str:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="ecs_worker.events"):
                result = dispatcher.dispatch(event)
                dispatcher.run_on_settled(event, result, wait=True)
            lines = [r.getMessage() for r in caplog.records if r.name == "ecs_worker.events"]
            assert len(lines) == 1, lines
            return lines[0]

        yield settle
        dispatcher.shutdown()


def test_an_ignored_event_says_why_for_each_plugin(worker):
    line = worker(state_change("i-plain", "Stopped"))
    assert line.endswith("i-plain Stopped -> ignored (quiet: gave no reason; restart: not restarting "
                         "i-plain: no opt-in tag ecs-worker:auto-restart=true)"), line
    line = worker(state_change("i-tagged", "Running"))
    assert "-> ignored (quiet: gave no reason; restart: only Stopped instances are restarted, " \
           "this is Running)" in line, line


def test_a_deferral_says_its_delay_and_reason(worker):
    line = worker(state_change("i-tagged", "Stopped"))
    assert line.endswith("i-tagged Stopped -> deferred 45s (quiet: gave no reason; restart: grace period "
                         "before restarting i-tagged)"), line


def test_skip_reason_reaches_the_result_and_a_handled_result_wins(tmp_path):
    from ecs_worker.testing import Harness

    class Picky:
        name = "picky"

        @staticmethod
        def _impl(event, ctx):
            if event.state == "Running":
                return ctx.skip("  only\nStopped   matters ")
            ctx.skip("changed my mind")
            return "noted"

    from ecs_worker import hookimpl
    Picky.on_state_change = staticmethod(hookimpl(Picky._impl))
    with Harness(Picky()) as h:
        ignored = h.dispatch(state_change("i-1", "Running"))
        assert ignored.outcome == "ignored" and ignored.plugins["picky"].detail == "only Stopped matters"
        handled = h.dispatch(state_change("i-1", "Stopped"))
        assert handled.outcome == "handled" and handled.plugins["picky"].detail == "noted"
