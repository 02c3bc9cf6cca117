"""Watching for plugins whose calls are all stuck (`lanes.Lane.stuck`).

Their events wait meanwhile (deferred by the dispatcher, never charged). Once all of
a plugin's threads have been stuck for `[plugins] stuck_health_seconds`, `/healthz`
answers 503 naming it; after `stuck_exit_seconds` the worker exits with `EXIT_STUCK`
so that the service manager restarts it: a thread stuck in a call cannot be freed any
other way. Each stuck call already failed the event it was running (an attempt), so a
plugin that hangs on one event every time gets that event dead-lettered, not the
worker restarted forever. `ecs_worker_plugin_stuck_calls` counts the stuck calls.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from ..observability import health, metrics

log = logging.getLogger("ecs_worker.runner")


class StuckWatch:
    def __init__(self, stuck: Callable[[], dict[str, tuple[int, float | None]]],
                 health_after: float, exit_after: float) -> None:
        self._stuck = stuck  # the dispatcher's per-plugin (stuck calls, all stuck since)
        self.health_after, self.exit_after = health_after, exit_after
        self._reported: set[str] = set()

    def check(self) -> str | None:
        """Update the metric and /healthz; the plugin to exit for, if any."""
        now = time.monotonic()
        for plugin, (calls, since) in self._stuck().items():
            metrics.PLUGIN_STUCK_CALLS.labels(plugin).set(calls)
            seconds = now - since if since is not None else -1.0
            if since is None or seconds < self.health_after:
                health.stuck_plugins.pop(plugin, None)
                self._reported.discard(plugin)
                continue
            health.stuck_plugins[plugin] = seconds
            if plugin not in self._reported:
                self._reported.add(plugin)
                log.error("plugin %s: all its call threads have been stuck for %.0fs; its events wait; "
                          "/healthz reports it%s", plugin, seconds,
                          f"; the worker restarts after {self.exit_after:g}s" if self.exit_after else "")
            if self.exit_after and seconds >= self.exit_after:
                return plugin
        return None
