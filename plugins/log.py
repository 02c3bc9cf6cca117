"""Built-in `log` plugin: one line per settled event, human-readable or JSON.

An observer: it never changes an outcome. Secrets cannot reach it — it logs event
fields and action records, never credentials or raw bodies.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ecs_worker import FAILED, IGNORED, INVALID, hookimpl, setting

log = logging.getLogger("ecs_worker.events")


@dataclass(frozen=True)
class Config:
    format: str = setting("text", choices=("text", "json"))
    level: str = setting("INFO", choices=("DEBUG", "INFO", "WARNING"))
    ignored: bool = setting(True, doc="also log events no plugin acted on")


@hookimpl
def on_settled(event, result, ctx):
    cfg: Config = ctx.config
    if result.outcome == IGNORED and not cfg.ignored:
        return
    level = logging.WARNING if result.outcome in (FAILED, INVALID) else getattr(logging, cfg.level)
    if not log.isEnabledFor(level):
        return
    extra = {"event_id": event.id if event else None, "event_name": event.name if event else None,
             "instance_id": event.instance_id if event else None, "outcome": result.outcome}
    delay = f" {result.defer_seconds:.0f}s" if result.defer_seconds is not None else ""
    why = result.why()
    extra.update(why=why, defer_seconds=result.defer_seconds)
    if cfg.format == "json":
        row = {**(event.summary() if event else {}), "outcome": result.outcome,
               "actions": [f"{a.plugin}:{a.action}:{a.target}:{a.result}" for a in result.actions],
               "why": why}
        if result.defer_seconds is not None:
            row["defer_seconds"] = result.defer_seconds
        if result.error:
            row["error"] = result.error
        log.log(level, json.dumps(row, default=str), extra=extra)
        return
    if event is None:
        log.log(level, "invalid message: %s", result.error, extra=extra)
        return
    detail = event.state or event.action or ""
    actions = ", ".join(f"{a.action} {a.target}{' (dry-run)' if a.dry_run else ''}"
                        for a in result.actions)
    # e.g. "e1 Instance:StateChange i-1 Stopped -> deferred 30s (restart: grace period before …)"
    log.log(level, "%s %s %s%s -> %s%s%s%s%s", event.id, event.name, event.instance_id or "-",
            f" {detail}" if detail else "", result.outcome, delay, f" ({why})" if why else "",
            f" [{actions}]" if actions else "", f": {result.error}" if result.error else "",
            extra=extra)
