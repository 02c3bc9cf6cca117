"""The plugin author's path: a class plugin's `Config` is found where a user puts it (or the
mistake is refused when the plugin loads, not at 3 a.m.), and a plugin has one name — the
harness calls it what the worker does."""
from __future__ import annotations

import sys
import textwrap

import pytest

from ecs_worker import ConfigError
from ecs_worker.plugin_host.manager import PluginError
from ecs_worker.testing import Harness, state_change


def module(tmp_path, monkeypatch, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return __import__(name)


CLASS_PLUGIN = """
    from dataclasses import dataclass
    from ecs_worker import hookimpl, setting

    @dataclass(frozen=True)
    class Config:  # at module level, beside the class, as the built-ins' modules have it
        limit: int = setting(5, min=1, max=10)

    class Budgeted:
        @hookimpl
        def on_state_change(self, event, ctx):
            return f"limit {ctx.config.limit}"
"""


def test_a_class_plugins_module_level_config_is_validated(tmp_path, monkeypatch):
    mod = module(tmp_path, monkeypatch, "budgeted", CLASS_PLUGIN)
    with Harness(mod.Budgeted(), config={"limit": 3}) as h:
        assert h.dispatch(state_change("i-1", "Stopped")).plugins["Budgeted"].detail == "limit 3"
    with pytest.raises(ConfigError, match=r"\[plugins.Budgeted\] limitt: unknown key \(known: limit\)"):
        Harness(mod.Budgeted(), config={"limitt": 3})
    with pytest.raises(ConfigError, match="limit: must be between 1 and 10, got 50"):
        Harness(mod.Budgeted(), config={"limit": 50})


def test_a_config_that_is_not_a_dataclass_is_refused_at_load(tmp_path, monkeypatch):
    mod = module(tmp_path, monkeypatch, "sloppy", """
        from ecs_worker import hookimpl

        class Config:  # forgot @dataclass: nothing would be validated
            limit = 5

        @hookimpl
        def on_state_change(event, ctx):
            return "ok"
    """)
    with pytest.raises(PluginError, match=r"plugin 'sloppy' .*its Config must be a @dataclass"):
        Harness(mod)


def test_the_harness_names_an_installed_plugin_as_the_worker_does():
    from ecs_worker.config import parse_config
    from ecs_worker.plugin_host.manager import load_plugins
    from ecs_worker_hello import HelloPlugin

    production = {i.name for i in load_plugins(parse_config({})).info() if i.origin.startswith("entry point")}
    with Harness(HelloPlugin()) as h:
        assert h.name in production and h.name == "hello"
