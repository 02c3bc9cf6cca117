"""The plugin API is `ctx` plus the top-level `ecs_worker` exports, and the built-ins use
nothing else; stateful built-ins keep their state per registration."""
from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

import ecs_worker
from ecs_worker import hookimpl
from ecs_worker.config import parse_config
from ecs_worker.plugin_host.manager import DEFAULT_PLUGINS, builtin_name, load_plugins
from ecs_worker.plugins.slb import SlbPlugin
from ecs_worker.testing import Harness, maintenance, state_change

PLUGINS_DIR = Path(ecs_worker.plugins.__file__).parent


def _imports(path: Path):
    """(module, names, level) of every import in `path`, function-level ones included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", tuple(a.name for a in node.names), node.level


def test_built_in_plugins_import_only_the_public_api_and_their_own_package():
    files = sorted(PLUGINS_DIR.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        depth = len(path.relative_to(PLUGINS_DIR).parts) - 1  # 0: plugins/x.py, 1: plugins/pkg/x.py
        for module, names, level in _imports(path):
            if level:  # relative: must stay inside ecs_worker.plugins
                assert level <= depth + 1 - (path.name == "__init__.py" and depth == 0), \
                    f"{path}: from {'.' * level}{module} leaves the plugin package"
                continue
            if module == "ecs_worker":
                assert set(names) <= set(ecs_worker.__all__), f"{path}: {names} not in ecs_worker.__all__"
            elif module.startswith("ecs_worker."):
                assert module.startswith("ecs_worker.plugins"), f"{path}: imports internal {module}"


def test_no_built_in_keeps_state_in_a_module_global():
    for path in sorted(PLUGINS_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Global), f"{path}:{node.lineno}: global {node.names}"


def test_each_load_registers_fresh_plugin_objects():
    config = parse_config({"plugins": {"disabled": ["hello"]}})
    first, second = load_plugins(config), load_plugins(config)
    for spec in DEFAULT_PLUGINS:
        if ":" in spec:
            name = builtin_name(spec)
            a, b = first.pm.get_plugin(name), second.pm.get_plugin(name)
            assert type(a).__name__ == spec.rsplit(":", 1)[1] and a is not b


def test_two_slb_registrations_keep_their_own_remover():
    """A second start-up once closed and replaced the first one's (a module global)."""
    one, two = SlbPlugin(), SlbPlugin()
    with Harness(one, dry_run=True), Harness(two, dry_run=True):
        assert one.remover is not None and two.remover is not None and one.remover is not two.remover
        assert one.remover._thread.is_alive() and two.remover._thread.is_alive()
    assert one.remover is None and two.remover is None  # released by on_shutdown


class Probe:
    """Records what ctx offers."""

    name = "probe"

    def __init__(self) -> None:
        self.seen: dict = {}

    @hookimpl
    def on_event(self, event, ctx):
        self.seen.update(runtime=hasattr(ctx, "runtime"), config=ctx.config, region=ctx.region,
                         state_dir=ctx.state_dir)
        ctx.defer(60, "later")
        if event.name.startswith("Instance:SystemMaintenance"):
            ctx.cancel_defer()  # nothing to wait for after all
        return "seen"


def test_ctx_offers_its_own_config_region_and_a_private_state_dir_and_no_runtime(tmp_path):
    probe = Probe()
    old = os.umask(0o022)
    try:
        with Harness(probe, config={"x": 1}, settings={
                "worker": {"state_dir": str(tmp_path / "state")},
                "cloud": {"region": "cn-shanghai"}}) as h:
            result = h.dispatch(maintenance("i-1"))
            deferred = h.dispatch(state_change("i-1", "Stopped"))
    finally:
        os.umask(old)
    assert result.outcome == "handled"  # the deferral was taken back
    assert deferred.outcome == "deferred" and deferred.defer_seconds == 60
    assert probe.seen["runtime"] is False
    assert probe.seen["config"] == {"x": 1} and probe.seen["region"] == "cn-shanghai"
    state_dir = probe.seen["state_dir"]
    assert state_dir == tmp_path / "state" / "plugins" / "probe" and state_dir.is_dir()
    for d in (state_dir, state_dir.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_act_many_records_a_batched_call_on_each_events_context():
    """One call made for two events (as slb's coalescer does): each event records its part."""
    calls = []

    class Batch:
        name = "batch"

        def __init__(self) -> None:
            self.held = []

        @hookimpl
        def on_event(self, event, ctx):
            self.held.append(ctx)
            if len(self.held) < 2:
                return "held"
            first, second = self.held
            second.act_many("Change", [(first, "t-1"), (second, "t-2"), "t-3"], lambda: calls.append(1))
            return "batched"

    batch = Batch()
    with Harness(batch, dry_run=False) as h:
        h.dispatch(state_change("i-1", "Stopped"))
        second = h.dispatch(state_change("i-2", "Stopped"))
    assert calls == [1]
    assert [(a.action, a.target, a.result) for a in second.actions] == [("Change", "t-2", "ok"), ("Change", "t-3", "ok")]
    assert [a.target for a in batch.held[0].actions] == ["t-1"]


@pytest.mark.parametrize("name", ["Context", "Runtime", "Dispatcher"])
def test_the_machinery_is_not_exported(name):
    assert name not in ecs_worker.__all__


def test_an_entry_point_naming_a_class_registers_a_fresh_instance_per_load(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from ecs_worker.plugin_host import manager

    (tmp_path / "counting_plugin.py").write_text(
        "from ecs_worker import hookimpl\n"
        "class Counting:\n"
        "    def __init__(self):\n"
        "        self.seen = 0\n"
        "    @hookimpl\n"
        "    def on_event(self, event, ctx):\n"
        "        self.seen += 1\n"
        "        return self.seen\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(manager, "entry_points", lambda group: [
        EntryPoint("counting", "counting_plugin:Counting", group)] if group == manager.ENTRY_POINT_GROUP else [])
    monkeypatch.delenv(manager.LOAD_ENV, raising=False)
    config = parse_config({"plugins": {"disabled": ["log", "restart", "slb", "maintenance", "webhook"]}})
    first, second = load_plugins(config), load_plugins(config)
    a, b = first.pm.get_plugin("counting"), second.pm.get_plugin("counting")
    assert type(a).__name__ == "Counting" and a is not b
    assert {i.name: i.origin for i in first.info()}["counting"].startswith("entry point")
