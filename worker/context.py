"""`ctx`: what each plugin call gets besides the event (see hookspecs.py)."""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .actions import Action, ActionGateway

if TYPE_CHECKING:
    from .config import Config
    from .events import Event

# 30 days. Up to `[worker] resend_deferrals_after` the message is hidden; longer, it is
# re-sent with DelaySeconds in hops of at most 7 days (deferred.py).
MAX_DEFER_SECONDS = 30 * 86400


class Runtime:
    """Process-wide services shared by every context: config, gateway, cloud clients."""

    def __init__(self, config: Config, plugin_configs: dict[str, Any] | None = None,
                 dry_run: bool | None = None) -> None:
        self.config = config
        self.dry_run = config.worker.dry_run if dry_run is None else dry_run
        self.gateway = ActionGateway(self.dry_run)
        self.plugin_configs = plugin_configs or {}
        self._cloud = None
        self._lock = threading.Lock()

    @property
    def cloud(self):
        """ECS/SLB clients, built on first use so commands that need none stay fast."""
        with self._lock:
            if self._cloud is None:
                from .cloud import Cloud  # lazy: the cloud SDKs are slow to import

                self._cloud = Cloud.from_config(self.config)
            return self._cloud

    def context(self, plugin: str, event: Event | None = None,
                deferred_since: float | None = None) -> Context:
        return Context(self, plugin, event, deferred_since)


@dataclass(frozen=True)
class Deferral:
    plugin: str
    seconds: float
    reason: str


class Context:
    """One plugin's view of one event (or of start-up / shutdown when `event` is None)."""

    def __init__(self, runtime: Runtime, plugin: str, event: Event | None = None,
                 deferred_since: float | None = None) -> None:
        self.runtime = runtime
        self.plugin = plugin
        self.event = event
        self.deferred_since = deferred_since
        self.actions: list[Action] = []
        self.deferral: Deferral | None = None
        extra = {"plugin": plugin}
        if event is not None:
            extra.update(event_id=event.id, event_name=event.name, instance_id=event.instance_id)
        self.log = logging.LoggerAdapter(logging.getLogger(f"ecs_worker.plugin.{plugin}"), extra)

    @property
    def config(self) -> Any:
        return self.runtime.plugin_configs.get(self.plugin, {})

    @property
    def dry_run(self) -> bool:
        return self.runtime.dry_run

    @property
    def cloud(self):
        return self.runtime.cloud

    def act(self, action: str, target: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Perform a cloud-changing call through the gateway (dry-run aware, recorded)."""
        return self.runtime.gateway.perform(self.plugin, action, target, call, *args,
                                            sink=self.actions, **kwargs)

    def defer(self, seconds: float, reason: str = "") -> None:
        """Ask for this event again in `seconds` (at most 30 days); not a failure."""
        if not isinstance(seconds, (int, float)) or math.isnan(seconds) or seconds < 0:
            raise ValueError(f"defer seconds must be a non-negative number, got {seconds!r}")
        self.deferral = Deferral(self.plugin, min(float(seconds), MAX_DEFER_SECONDS), reason)
