"""The plugin manager: built-ins, entry-point plugins and configured ones, one way.

Built-ins are listed in `DEFAULT_PLUGINS` and registered with the same `@hookimpl`
markers as any third-party plugin: a module, or — for a plugin with state — a fresh
instance of its class (`"module:Class"`), so each registration owns its state from
`on_startup` to `on_shutdown` (as pytest's junitxml and dramatiq's middleware do); `[plugins] disabled` blocks any plugin by name.
`ECS_WORKER_LOAD_PLUGINS` (comma-separated names; set and empty = none) limits which
installed entry-point plugins load, as `LLM_LOAD_PLUGINS` does for llm: a broken package in
the same environment then cannot take the worker, the demo or the tests down with it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, is_dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from ..config import Config, ConfigError, build_section

DEFAULT_PLUGINS = (
    "ecs_worker.plugins.log",
    "ecs_worker.plugins.restart:RestartPlugin",
    "ecs_worker.plugins.slb:SlbPlugin",
    "ecs_worker.plugins.maintenance:MaintenancePlugin",
    "ecs_worker.plugins.webhook:WebhookPlugin",
)
ENTRY_POINT_GROUP = "ecs_worker"
LOAD_ENV = "ECS_WORKER_LOAD_PLUGINS"


def allowed_entry_points() -> set[str] | None:
    """The entry-point plugin names `ECS_WORKER_LOAD_PLUGINS` allows; None = all (unset)."""
    raw = os.environ.get(LOAD_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


class PluginError(ConfigError):
    """A plugin that cannot be loaded or registered; names the plugin and its file."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    origin: str  # "builtin", "entry point <dist>", "config"
    location: str  # module file
    hooks: tuple[str, ...]


class Plugins:
    """A pluggy manager plus where each plugin came from and its validated config."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.configs: dict[str, Any] = {}

    def register(self, plugin: Any, name: str, origin: str) -> None:
        if self.pm.has_plugin(name):
            raise PluginError(f"plugin {name!r} ({origin}, {_location(plugin)}) clashes with an "
                              f"already registered plugin of that name ({self.origins[name]})")
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:  # bad hook signature, duplicate
            raise PluginError(f"plugin {name!r} ({_location(plugin)}): {_flat(exc)}") from None
        self.origins[name] = origin

    def version(self, name: str) -> str:
        """The plugin's distribution version (the module's `__version__` for a file), or "-"."""
        if name in self.versions:
            return self.versions[name]
        plugin = self.pm.get_plugin(name)
        if self.origins.get(name) == "builtin":
            from ..version import __version__
            return __version__
        return str(getattr(plugin, "__version__", "-"))

    def info(self) -> list[PluginInfo]:
        out = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            out.append(PluginInfo(name, self.origins.get(name, "?"), _location(plugin), hooks))
        return out


def load_plugins(config: Config, *, entry_points_too: bool = True) -> Plugins:
    """Register every plugin that `config` allows and validate their config sections."""
    disabled = set(config.plugins.disabled)
    plugins = Plugins()
    for spec in DEFAULT_PLUGINS:
        name = builtin_name(spec)
        if name not in disabled:
            plugins.register(_builtin(spec, name), name, "builtin")
    allowed = allowed_entry_points()
    if entry_points_too:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or (allowed is not None and ep.name not in allowed):
                continue
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: B902 - SystemExit at import too: a bad plugin, exit 2
                raise PluginError(f"plugin {ep.name!r} (entry point {ep.value}): cannot import: "
                                  f"{type(exc).__name__}: {exc}") from None
            if isinstance(obj, type):  # a plugin class: each load registers a fresh instance
                obj = _instantiate(obj, ep.name, f"entry point {ep.value}")
            dist = getattr(ep, "dist", None)
            plugins.register(obj, ep.name, f"entry point ({dist.name if dist else ep.value})")
            if dist is not None:
                plugins.versions[ep.name] = dist.version
    for spec in config.plugins.load:
        name = Path(spec).stem if spec.endswith(".py") else spec.rsplit(".", 1)[-1]
        if name in disabled:
            continue
        obj = _load_path(spec, name) if spec.endswith(".py") else _import(spec, name)
        plugins.register(obj, name, "config")
    try:
        plugins.pm.check_pending()
    except pluggy.PluginValidationError as exc:  # a hook name no spec knows: a typo, usually
        name = plugins.pm.get_name(exc.plugin)
        raise PluginError(f"plugin {name!r} ({_location(exc.plugin)}): {_flat(exc)}") from None
    configure_plugins(plugins, config)
    return plugins


def builtin_name(spec: str) -> str:
    """"ecs_worker.plugins.slb:SlbPlugin" -> "slb"."""
    return spec.partition(":")[0].rsplit(".", 1)[1]


def _builtin(spec: str, name: str) -> Any:
    module_name, _, class_name = spec.partition(":")
    module = _import(module_name, name)
    return _instantiate(getattr(module, class_name), name, spec) if class_name else module


def _instantiate(cls: type, name: str, where: str) -> Any:
    try:
        return cls()
    except BaseException as exc:  # noqa: B902 - a plugin's SystemExit is its failure, not ours
        raise PluginError(f"plugin {name!r} ({where}): cannot create it: {type(exc).__name__}: {exc}") from None


def configure_plugins(plugins: Plugins, config: Config) -> None:
    """Give each loaded plugin its validated `[plugins.<name>]` section (a section naming no
    loaded plugin is an error); the test kit's Harness does the same for one plugin."""
    where = config.path
    for name in config.plugin_sections:
        if not plugins.pm.has_plugin(name) and name not in config.plugins.disabled:
            raise ConfigError(f"{where}: [plugins.{name}]: no plugin named {name!r} is loaded")
    for name, plugin in plugins.pm.list_name_plugin():
        section = config.plugin_sections.get(name, {})
        schema = getattr(plugin, "Config", None)
        if schema is not None and is_dataclass(schema):
            plugins.configs[name] = build_section(schema, section, f"{where}: [plugins.{name}]")
        else:
            plugins.configs[name] = dict(section)


def _import(module_name: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except BaseException as exc:  # noqa: B902 - a plugin's SystemExit is its failure, not ours
        raise PluginError(f"plugin {name!r}: cannot import module {module_name!r}: "
                          f"{type(exc).__name__}: {exc}") from None


def _load_path(path: str, name: str) -> ModuleType:
    file = Path(path).expanduser()
    if not file.is_file():
        raise PluginError(f"plugin {name!r}: no such file {file}")
    module_name = f"ecs_worker_local_{name}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: B902 - a plugin's SystemExit is its failure, not ours
        sys.modules.pop(module_name, None)
        line = getattr(exc, "lineno", None)
        where = f"{file}:{line}" if line else str(file)
        raise PluginError(f"plugin {name!r} ({where}): {type(exc).__name__}: {exc}") from None
    return module


def _flat(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _location(plugin: Any) -> str:
    if getattr(plugin, "__file__", None):
        return plugin.__file__
    module = sys.modules.get(getattr(type(plugin), "__module__", ""))  # a plugin object
    return getattr(module, "__file__", None) or getattr(type(plugin), "__module__", repr(plugin))
