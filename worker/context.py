"""`ctx`: what each plugin call gets besides the event (see hookspecs.py)."""
from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .actions import Action, ActionGateway
from .deferred import RESUME_STATE  # noqa: F401 - the name plugins and tests know it by

if TYPE_CHECKING:
    from .config import Config
    from .events import Event

# 30 days. Up to `[worker] resend_deferrals_after` the message is hidden; longer, it is
# re-sent with DelaySeconds in hops of at most 7 days (deferred.py).
MAX_DEFER_SECONDS = 30 * 86400
MAX_STATE_BYTES = 8192  # a message is at most 64 KiB, and the original body rides along


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
                from .cloud import CloudClient  # lazy: the cloud SDKs are slow to import

                self._cloud = CloudClient.from_config(self.config)
            return self._cloud

    def context(self, plugin: str, event: Event | None = None,
                deferred_since: float | None = None, resume_state: Any = None) -> Context:
        return Context(self, plugin, event, deferred_since, resume_state)


@dataclass(frozen=True)
class Deferral:
    plugin: str
    seconds: float
    reason: str


class Context:
    """One plugin's view of one event (or of start-up / shutdown when `event` is None)."""

    def __init__(self, runtime: Runtime, plugin: str, event: Event | None = None,
                 deferred_since: float | None = None, resume_state: Any = None) -> None:
        self.runtime = runtime
        self.plugin = plugin
        self.event = event
        self.deferred_since = deferred_since
        self.resume_state = resume_state  # what this plugin saved for this event last time, or None
        self.saved_state: Any = None
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

    def act_many(self, action: str, targets: list[str], call: Callable[..., Any], *args: Any,
                 note: str = "", **kwargs: Any) -> Any:
        """One cloud-changing call acting on several targets (e.g. an instance's two ports
        in one group): like `act`, each target recorded; `note` details a dry-run plan."""
        return self.runtime.gateway.perform_many(self.plugin, action, [(t, self.actions) for t in targets],
                                                 call, *args, note=note, **kwargs)

    @property
    def region(self) -> str:
        """The region this worker serves (`[cloud] region`)."""
        return self.runtime.config.cloud.region

    def load_balancers(self, kinds: Any = ("clb", "alb", "nlb"), job_timeout: float = 60.0):
        """The load-balancer layer over `ctx.cloud` (ecs_worker.cloud.membership.LoadBalancers):
        `memberships(instance_id)` reads an instance's every entry in CLB vserver groups and
        ALB/NLB server groups; `remove` / `drain` / `restore(kind, group, members)` change one
        group (ALB/NLB jobs followed to the end) — wrap them in `ctx.act_many`.
        `Membership.to_json()` / `from_json()` carry memberships in `ctx.defer(state=...)`."""
        from .cloud.membership import LoadBalancers

        return LoadBalancers(self.cloud, kinds, job_timeout)

    def defer(self, seconds: float, reason: str = "", state: Any = None) -> None:
        """Ask for this event again in `seconds` (at most 30 days); not a failure.

        `state`, when given, is saved (see `save_state`) and is `ctx.resume_state` on return."""
        if not isinstance(seconds, (int, float)) or math.isnan(seconds) or seconds < 0:
            raise ValueError(f"defer seconds must be a non-negative number, got {seconds!r}")
        if state is not None:
            self.save_state(state)
        self.deferral = Deferral(self.plugin, min(float(seconds), MAX_DEFER_SECONDS), reason)

    def save_state(self, state: Any) -> None:
        """Keep `state` with this event's message for this plugin's next call on it, after
        a deferral or a failure (`ctx.resume_state` then). JSON-ready and small (8 KiB):
        it travels with the message, so any worker can continue — never keep a secret in it.
        `None` clears it. A handled or ignored outcome ends it."""
        if state is None:
            self.saved_state = None
            return
        try:
            text = json.dumps(state, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"state must be JSON-ready: {exc}") from None
        if len(text.encode("utf-8")) > MAX_STATE_BYTES:
            raise ValueError(f"state is {len(text)} bytes of JSON, over {MAX_STATE_BYTES}")
        self.saved_state = json.loads(text)  # a copy: later changes to `state` do not leak in
