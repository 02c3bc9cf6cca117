"""Hooks ↔ the events they receive: one table (worker/hook_events.py), and everything derived from it.

The end-to-end proof: each built-in plugin alone, and every pair, gets its own queue and the rule
`setup` writes for it, in one emulator; then the emulator's fleet publishes one event of each kind
(through CloudMonitor's rules, the real path) and every queue must hold exactly the events its
plugins' hooks take — and, parsed, each reaches those hooks.
"""
from __future__ import annotations

import base64
import io
import itertools
import json
import re
import time
from pathlib import Path

import pytest

from ecs_worker.cloud.credentials import credentials_provider
from ecs_worker import hookimpl, parse_event
from ecs_worker.config import parse_config
from ecs_worker.plugin_host.hook_events import EVERY_EVENT, FIXED_NAMES, HOOK_EVENTS, HOOK_OF_NAME
from ecs_worker.plugin_host.manager import DEFAULT_PLUGINS, PluginError, builtin_name, load_plugins
from ecs_worker.operations.setup import Setup, event_names
from ecs_worker.testing import Harness, maintenance, state_change, interruption

from ecs_worker.testing import mns_queue

ROOT = Path(__file__).resolve().parent.parent
BUILTINS = [builtin_name(spec) for spec in DEFAULT_PLUGINS]
WEB1, SPOT = "i-bp1web000000000001", "i-bp1spot00000000001"

# One event of each kind the fleet publishes, and the hooks a plugin must implement to take it.
# Written out here rather than read from hook_events.py: the test must not agree by construction.
# The maintenance plugin acts on a scheduled reboot (its docstring); an Executing notification is
# what no built-in's specific hook needs.
STATE = "Instance:StateChange"
SPOT_NOTICE = "Instance:PreemptibleInstanceInterruption"
REBOOT_SCHEDULED = "Instance:SystemMaintenance.Reboot:Scheduled"
REBOOT_EXECUTING = "Instance:SystemMaintenance.Reboot:Executing"
PUBLISHED = (STATE, SPOT_NOTICE, REBOOT_SCHEDULED, REBOOT_EXECUTING)
EVERYTHING = {"on_event", "on_settled"}
TAKES = {"on_state_change": {STATE}, "on_preemptible_interruption": {SPOT_NOTICE},
         "on_system_event": {REBOOT_SCHEDULED}}


def _config(emulator, queue: str, enabled: tuple[str, ...], tmp_path: Path):
    return parse_config({
        "mns": {"endpoint": emulator.mns_endpoint, "queue": queue, "dead_letter_queue": ""},
        "cloud": {"region": emulator.region, "endpoint": emulator.endpoint, "protocol": "http"},
        "credentials": {"access_key_id": emulator.access_key_id, "access_key_secret": emulator.access_key_secret},
        "worker": {"state_dir": str(tmp_path / queue)},
        "plugins": {"disabled": [n for n in BUILTINS if n not in enabled] + ["hello"]},
    }, f"<{queue}>")


def _wanted(plugins) -> set[str]:
    hooks = {h for info in plugins.info() for h in info.hooks}
    if hooks & EVERYTHING:
        return set(PUBLISHED)
    return set().union(*(TAKES.get(h, set()) for h in hooks))


def _drain(emulator, queue: str) -> list:
    q, events = mns_queue(emulator, queue), []
    while True:
        try:
            got = q.batch_receive_message(16, 0)
        except Exception as exc:  # MessageNotExist: empty
            assert getattr(exc, "type", "") == "MessageNotExist", exc
            return events
        for m in got:
            events.append(parse_event(base64.b64decode(m.message_body)))


def test_setup_rule_delivers_what_each_builtin_and_each_pair_takes(emulator, tmp_path):
    combos = [(n,) for n in BUILTINS] + list(itertools.combinations(BUILTINS, 2))
    setups = {}
    for i, combo in enumerate(combos):
        queue = f"q{i}-{'-'.join(combo)}"
        config = _config(emulator, queue, combo, tmp_path)
        plugins = load_plugins(config, entry_points_too=False)
        assert sorted(p for p, _ in plugins.pm.list_name_plugin()) == sorted(combo)
        out = io.StringIO()
        assert Setup(config, plugins, dry_run=False, out=out, provider=credentials_provider(config.credentials)).run() == 0, out.getvalue()
        setups[queue] = (combo, plugins)

    world = emulator.world
    with world.lock:  # the fleet publishes through the rules, as CloudMonitor does
        world.cloud.publish_event(STATE, WEB1, {"resourceId": WEB1, "state": "Stopped",
                                                "resourceType": "ALIYUN::ECS::Instance"}, "INFO")
        world.cloud.publish_event(SPOT_NOTICE, SPOT, {"instanceId": SPOT, "action": "delete"}, "WARN")
        world.cloud.system_events.schedule(WEB1, "SystemMaintenance.Reboot", time.time() + 86400)
        world.cloud.publish_event(REBOOT_EXECUTING, WEB1, {"eventId": "e-x", "eventType": "SystemMaintenance.Reboot",
                                                           "eventStatus": "Executing", "instanceId": WEB1}, "WARN")

    for queue, (combo, plugins) in setups.items():
        delivered = _drain(emulator, queue)
        assert {e.name for e in delivered} == _wanted(plugins), combo
        # each delivered event reaches the hooks that take it, as the worker dispatches
        for e in delivered:
            hook = HOOK_OF_NAME.get(e.name) or ("on_system_event" if e.is_system_event else None)
            implementing = {i.name for i in plugins.info() if hook in i.hooks or set(i.hooks) & EVERYTHING}
            assert implementing, (combo, e.name)


def test_only_maintenance_setup_then_a_scheduled_reboot_reaches_the_plugin(emulator, tmp_path):
    config = _config(emulator, "maint", ("maintenance",), tmp_path)
    plugins = load_plugins(config, entry_points_too=False)
    assert event_names(plugins) == (REBOOT_SCHEDULED,)
    assert Setup(config, plugins, dry_run=False, out=io.StringIO(), provider=credentials_provider(config.credentials)).run() == 0
    with emulator.world.lock:
        emulator.world.cloud.system_events.schedule(WEB1, "SystemMaintenance.Reboot", time.time() + 86400)
    (event,) = _drain(emulator, "maint")
    called = []

    class Probe:
        @hookimpl
        def on_system_event(self, event, ctx):
            called.append((event.event_type, event.event_status, event.instance_id))
            return "seen"

    with Harness(Probe(), name="probe") as h:
        assert h.dispatch(event).outcome == "handled"
    assert called == [("SystemMaintenance.Reboot", "Scheduled", WEB1)]


def test_maintenance_declares_each_acted_on_type(emulator, tmp_path):
    config = _config(emulator, "m2", ("maintenance",), tmp_path)
    config.plugin_sections["maintenance"] = {"event_types": ["SystemMaintenance.Reboot",
                                                             "SystemMaintenance.Redeploy"]}
    plugins = load_plugins(config, entry_points_too=False)
    assert event_names(plugins) == (REBOOT_SCHEDULED, "Instance:SystemMaintenance.Redeploy:Scheduled")


def test_a_rule_name_without_the_status_delivers_no_notification(emulator):
    """CloudMonitor matches `NameList` entries as whole names (item 2): no prefix matching."""
    from ecs_worker.cloud import CloudClient
    from ecs_worker.cloud.cms import CloudMonitor, MnsTarget, Rule
    from ecs_worker.cloud.credentials import credentials_provider

    config = _config(emulator, "ecs-events", (), Path("/nonexistent"))
    monitor = CloudMonitor(CloudClient(config.cloud, credentials_provider(config.credentials)))
    monitor.put_rule(Rule("bare", "ENABLED", "ecs", ("Instance:SystemMaintenance.Reboot",)))
    monitor.put_target("bare", MnsTarget("1", emulator.region, "ecs-events"))
    with emulator.world.lock:
        emulator.world.cloud.system_events.schedule(WEB1, "SystemMaintenance.Reboot", time.time() + 86400)
    assert _drain(emulator, "ecs-events") == []


@pytest.mark.parametrize("declaration, ok", [
    ("['Instance:Disk.Stalled:Executing']", True), ("'*'", True), ("lambda cfg: ['Instance:X:Scheduled']", True),
    ("'Instance:SystemMaintenance.Reboot:Scheduled'", False),  # a bare string is not a list
    ("['Instance:SystemMaintenance.Reboot:*']", False), ("['']", False), ("[3]", False), ("42", False),
    ("lambda cfg: 'x'", False)])
def test_a_bad_declaration_is_a_plugin_error(tmp_path, declaration, ok):
    plugin = tmp_path / "declares.py"
    plugin.write_text(f"from ecs_worker import hookimpl\nsystem_events = {declaration}\n"
                      "@hookimpl\ndef on_system_event(event, ctx):\n    return None\n")
    config = parse_config({"plugins": {"load": [str(plugin)], "disabled": BUILTINS + ["hello"]}})
    if ok:
        load_plugins(config, entry_points_too=False)
    else:
        with pytest.raises(PluginError, match="declares.*system_events"):
            load_plugins(config, entry_points_too=False)


def test_an_undeclared_system_event_plugin_gets_every_event(tmp_path):
    plugin = tmp_path / "silent.py"
    plugin.write_text("from ecs_worker import hookimpl\n@hookimpl\ndef on_system_event(event, ctx):\n    return None\n")
    config = parse_config({"plugins": {"load": [str(plugin)], "disabled": BUILTINS + ["hello"]}})
    assert load_plugins(config, entry_points_too=False).event_names() == EVERY_EVENT


def test_dispatch_sends_each_fixed_name_to_its_hook_only(harness):
    calls = []

    class All:
        @hookimpl
        def on_state_change(self, event):
            calls.append("on_state_change")

        @hookimpl
        def on_preemptible_interruption(self, event):
            calls.append("on_preemptible_interruption")

        @hookimpl
        def on_system_event(self, event):
            calls.append("on_system_event")

    h = harness(All(), name="all")
    for event, hook in ((state_change(WEB1, "Stopped"), "on_state_change"),
                        (interruption(SPOT), "on_preemptible_interruption"),
                        (maintenance(WEB1), "on_system_event")):
        calls.clear()
        h.dispatch(event)
        assert calls == [hook]
    assert set(HOOK_OF_NAME.values()) == {"on_state_change", "on_preemptible_interruption", "on_lifecycle_hook"}
    assert set(HOOK_EVENTS) == {"on_state_change", "on_preemptible_interruption", "on_system_event",
                                "on_lifecycle_hook", "on_event", "on_settled"}  # every event hook of hookspecs.py


def _builtin_names() -> list[str]:
    """What the built-ins with a narrow rule need at their defaults: the docs' lists."""
    config = parse_config({"plugins": {"disabled": ["log", "webhook", "hello"]}})
    names = load_plugins(config, entry_points_too=False).event_names()
    assert names != EVERY_EVENT and set(FIXED_NAMES) <= set(names)
    return list(names)


def test_connect_docs_list_the_names_the_builtins_need():
    text = (ROOT / "docs" / "connect.md").read_text(encoding="utf-8")
    names = _builtin_names()
    console = re.search(r"\| Event rule \| ([^|]+)\|", text).group(1)
    assert re.findall(r"`(Instance:[^`]+)`", console) == names
    pattern = json.loads(re.search(r"(\{\"source\": \[\"acs\.ecs\"\].*?\})\n", text, re.S).group(1))
    assert pattern["type"] == ["ecs:" + n for n in names]


def test_hookspecs_prose_names_the_table_fixed_events():
    from ecs_worker.plugin_host import hookspecs

    for hook, names in HOOK_EVENTS.items():
        doc = getattr(hookspecs, hook).__doc__
        for name in names if isinstance(names, tuple) else ():
            assert f"`{name}`" in doc, (hook, name)


def test_metrics_start_every_name_the_loaded_plugins_take_at_zero():
    from ecs_worker.observability import metrics

    config = parse_config({"plugins": {"disabled": ["log", "webhook", "hello"]}})
    plugins = load_plugins(config, entry_points_too=False)
    metrics.known_labels([n for n, _ in plugins.pm.list_name_plugin()], plugins.event_names())
    for name in (STATE, SPOT_NOTICE, REBOOT_SCHEDULED):  # the table's, and maintenance's declaration
        assert metrics.REGISTRY.get_sample_value("ecs_worker_events_total",
                                                 {"name": name, "outcome": "handled"}) is not None, name
    assert metrics.REGISTRY.get_sample_value("ecs_worker_actions_total", {
        "plugin": "maintenance", "action": "RebootInstance", "result": "ok"}) is not None  # the registry's
