"""The one gateway for cloud-changing calls: honours dry-run and records every action.

Plugins reach it through `ctx.act(...)`; the record is what `replay --json`, the logs
and the metrics report, for built-in and third-party plugins alike.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..text import one_line

log = logging.getLogger("ecs_worker.actions")

OK, PLANNED, ERROR = "ok", "planned", "error"


@dataclass(frozen=True)
class Action:
    plugin: str
    action: str  # e.g. "StartInstance", "RemoveVServerGroupBackendServers"
    target: str  # e.g. "i-bp1…", "rsp-bp1web80:i-bp1…"
    dry_run: bool
    result: str  # ok | planned | error
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Listener = Callable[[Action], None]


class ActionGateway:
    """Performs (or, in dry-run, only plans) cloud-changing calls and tells listeners."""

    def __init__(self, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def perform(self, plugin: str, action: str, target: str, call: Callable[..., Any],
                *args: Any, sink: list[Action] | None = None, **kwargs: Any) -> Any:
        """Run `call(*args, **kwargs)` unless dry-run; record the action either way.

        Returns what `call` returned, or `None` in dry-run. Exceptions propagate after
        being recorded as an `error` action.
        """
        if self.dry_run:
            self._record(Action(plugin, action, target, True, PLANNED), sink)
            return None
        try:
            value = call(*args, **kwargs)
        except Exception as exc:
            self._record(Action(plugin, action, target, False, ERROR, one_line(exc)), sink)
            raise
        detail = value if isinstance(value, str) else ""
        self._record(Action(plugin, action, target, False, OK, detail), sink)
        return value

    def perform_many(self, plugin: str, action: str, targets: list[tuple[str, list[Action] | None]],
                     call: Callable[..., Any], *args: Any, note: str = "", **kwargs: Any) -> Any:
        """Like `perform`, for one call that acts for several events (a coalesced batch).

        `targets` pairs each target with the sink of the event it belongs to, so every
        event's record shows its own part. `note` is the detail of a dry-run plan
        (e.g. "unverified: ..." when the plan could not be checked against the cloud).
        """
        if self.dry_run:
            for target, sink in targets:
                self._record(Action(plugin, action, target, True, PLANNED, note), sink)
            return None
        try:
            value = call(*args, **kwargs)
        except Exception as exc:
            for target, sink in targets:
                self._record(Action(plugin, action, target, False, ERROR, one_line(exc)), sink)
            raise
        detail = value if isinstance(value, str) else ""
        for target, sink in targets:
            self._record(Action(plugin, action, target, False, OK, detail), sink)
        return value

    def _record(self, action: Action, sink: list[Action] | None) -> None:
        if sink is not None:
            sink.append(action)
        log.info("action %s %s on %s: %s%s", action.plugin, action.action, action.target,
                 action.result, f" ({action.detail})" if action.detail else "",
                 extra={"plugin": action.plugin, "action": action.action})
        for listener in list(self._listeners):
            try:
                listener(action)
            except Exception:  # a broken listener must not turn a done action into a failure
                log.exception("action listener failed")
