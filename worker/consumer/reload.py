"""SIGHUP: reload what a running worker can take on without a restart.

The config file is validated first (as `check-config` would): a bad file is logged and
changes nothing. A good one re-applies `[logging]` (level, format; the handler is made
anew, which also reopens stderr) and every plugin's `[plugins.<name>]` section, which
`ctx.config` reads at each call. What needs a restart (the queue, credentials,
concurrency, the plugin list ...) is named in the log, never half-applied.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import fields

from ..config import Config, load_config
from ..plugin_host.context import Runtime
from ..observability.logsetup import configure_logging
from ..plugin_host.manager import Plugins, configure_plugins
from ..text import one_line

log = logging.getLogger("ecs_worker.runner")

LIVE = ("logging", "plugin_sections")  # what a reload applies; the rest waits for a restart


def reload(path: str, running: Config, plugins: Plugins, runtime: Runtime) -> Config:
    """Apply the file at `path` where it can be; returns the config now in force."""
    try:
        new = load_config(path)
        staged = copy.copy(plugins)
        staged.configs = {}
        configure_plugins(staged, new)
    except Exception as exc:  # noqa: B902 - ConfigError, or whatever a plugin's Config raises
        log.error("SIGHUP: config not reloaded, the running one stays: %s", one_line(exc))
        return running
    configure_logging(new.logging.level, new.logging.format)
    runtime.plugin_configs = staged.configs  # one assignment: a call sees the old or the new
    pending = [f.name for f in fields(Config) if f.name not in LIVE and f.name != "path"
               and getattr(new, f.name) != getattr(running, f.name)]
    log.info("SIGHUP: reloaded %s: [logging] and the plugins' sections applied%s", path,
             f"; changed [{'], ['.join(pending)}] take effect at the next restart" if pending else "")
    return Config(**{f.name: getattr(new if f.name in LIVE else running, f.name) for f in fields(Config)})
