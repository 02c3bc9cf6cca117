"""The contract's vocabulary, beside `hookspecs.py`: the outcome names, what one plugin's call
came to (`PluginResult`), what one event came to (`Result`), and the process exit codes.

A leaf: it imports nothing of the worker's machinery, so the contract, the plugins, replay and
the consumer all speak the same words without depending on each other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..events.wrapper import RESUME_STATE

if TYPE_CHECKING:
    from ..cloud.gateway import Action
    from ..events.event import Event

HANDLED, FAILED, IGNORED, INVALID, DEFERRED = "handled", "failed", "ignored", "invalid", "deferred"
_PRECEDENCE = {IGNORED: 0, HANDLED: 1, DEFERRED: 2, FAILED: 3}  # a worse status wins


# Process exit codes (sysexits-like, as systemd's RestartPreventExitStatus=2 expects):
EXIT_OK = 0  # done, or stopped cleanly
EXIT_FAILURE = 1  # a failure worth a restart (an internal thread died, a check failed)
EXIT_USAGE = 2  # configuration or permissions: restarting will not help
EXIT_STUCK = 3  # a plugin's calls stayed stuck: only a new process clears its threads


@dataclass
class PluginResult:
    plugin: str
    status: str  # handled | ignored | failed | deferred
    detail: str = ""  # what the plugin returned, the error, or the deferral reason
    defer_seconds: float | None = None
    state: Any = None  # what the plugin saved for its next call (failed / deferred only)

    def merge(self, other: PluginResult) -> PluginResult:
        return other if _PRECEDENCE[other.status] > _PRECEDENCE[self.status] else self


@dataclass
class Result:
    """One event's outcome, every plugin's part in it, and the actions taken."""

    outcome: str
    event: Event | None = None
    error: str | None = None
    actions: list[Action] = field(default_factory=list)
    plugins: dict[str, PluginResult] = field(default_factory=dict)
    defer_seconds: float | None = None
    seconds: float = 0.0

    @property
    def retry_plugins(self) -> dict[str, float | None]:
        """Plugins to call again when the message returns, with when each deferred."""
        now = time.time()
        return {name: (now if r.status == DEFERRED else None)
                for name, r in self.plugins.items() if r.status in (FAILED, DEFERRED)}

    @property
    def resume_states(self) -> dict[str, Any]:
        """Each failed or deferred plugin's saved state (`ctx.save_state`), by plugin."""
        return {name: r.state for name, r in self.plugins.items()
                if r.status in (FAILED, DEFERRED) and r.state is not None}

    def resume(self, before: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The resume mapping for the message's return: `retry_plugins` (a plugin deferring
        again keeps its first deferral time from `before`) plus the saved states under
        `RESUME_STATE`."""
        before = before or {}
        out: dict[str, Any] = {name: (before.get(name) or since) if since is not None else None
                               for name, since in self.retry_plugins.items()}
        if self.resume_states:
            out[RESUME_STATE] = self.resume_states
        return out

    def to_json(self) -> dict[str, Any]:
        """The `replay --json` row (design.md contract)."""
        ev = self.event
        return {"id": ev.id if ev else None, "name": ev.name if ev else None,
                "instance_id": ev.instance_id if ev else None, "outcome": self.outcome,
                "actions": [{"plugin": a.plugin, "action": a.action, "target": a.target,
                             "dry_run": a.dry_run, "result": a.result, "detail": a.detail}
                            for a in self.actions],
                "error": self.error,
                # what each plugin returned (or its error / deferral reason), even with no action
                "plugins": {name: {"status": r.status, "detail": r.detail} for name, r in self.plugins.items()}}


def invalid(error: str) -> Result:
    return Result(INVALID, error=error)


def combine(event: Event, results: Iterable[PluginResult], actions: list[Action]) -> Result:
    """One event's result from its plugins' results: the worst status wins, failures are
    listed, and a deferral asks for the shortest delay any plugin asked for."""
    by_plugin: dict[str, PluginResult] = {}
    for r in results:
        by_plugin[r.plugin] = by_plugin[r.plugin].merge(r) if r.plugin in by_plugin else r
    outcome = IGNORED
    for r in by_plugin.values():
        if _PRECEDENCE[r.status] > _PRECEDENCE[outcome]:
            outcome = r.status
    failed = [f"{r.plugin}: {r.detail}" for r in by_plugin.values() if r.status == FAILED]
    delays = [r.defer_seconds for r in by_plugin.values()
              if r.status == DEFERRED and r.defer_seconds is not None]
    return Result(outcome, event, "; ".join(failed) or None, actions, by_plugin,
                  min(delays) if outcome == DEFERRED and delays else None)
