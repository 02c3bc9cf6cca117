"""Built-in `restart` plugin: start instances that stopped unexpectedly — safely.

Do no harm: only instances carrying the opt-in tag; wait `grace_seconds` (the queue's
visibility timeout is the timer, see `ctx.defer`) and re-read the instance before
acting; never touch an instance that is locked, being recycled, or a spot instance that
had an interruption notice; at most `max_restarts_per_hour` per instance (then a loud
error and no more tries: a crash-loop breaker) and `max_restarts_per_minute` overall.

The budgets and the interruption notices live in the worker's state store (`ctx.take`,
`ctx.remember`): they survive a worker restart, and with a shared store (`[worker] store =
"redis://…"`) they hold for the whole fleet — 3 restarts per instance per hour means 3,
however many workers there are. A store that cannot be reached restarts nothing: the
event waits and comes back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ecs_worker import hookimpl, setting

from .instance import (ALREADY_STARTED, SPOT_STRATEGIES, describe_instance, has_tag, locks_of,
                       skip_reason, start_instance, tags_of)

__all__ = ["Config", "RestartPlugin", "ALREADY_STARTED", "SPOT_STRATEGIES",
           "describe_instance", "has_tag", "locks_of", "skip_reason", "start_instance", "tags_of"]
HOUR, MINUTE = 3600.0, 60.0
INTERRUPTION_MEMORY_SECONDS = 24 * 3600  # a noticed spot instance stays off-limits this long


@dataclass(frozen=True)
class Config:
    require_tag: str = setting("ecs-worker:auto-restart=true",
                               doc='"key=value" or "key"; empty = every instance (a warning at start-up)')
    grace_seconds: float = setting(60.0, min=0, max=3600, doc="wait this long, then re-read, then act")
    max_restarts_per_hour: int = setting(3, min=1, max=100, doc="per instance; past it: error, no more tries")
    max_restarts_per_minute: int = setting(10, min=1, max=1000,
                                           doc="all instances together (fleet-wide with a shared store)")


class RestartPlugin:
    """One registration; what it remembers lives in the state store."""

    name = "restart"
    Config = Config

    def __init__(self) -> None:
        self.started = False

    @hookimpl
    def on_startup(self, ctx):
        cfg: Config = ctx.config
        if not cfg.require_tag.strip():
            ctx.log.warning("restart: require_tag is empty: EVERY instance that stops will be restarted")
        ctx.cloud  # builds the cloud client now, so a bad [credentials] section fails at start-up
        self.started = True

    @hookimpl
    def on_shutdown(self, ctx):
        self.started = False

    @hookimpl
    def on_preemptible_interruption(self, event, ctx):
        """Remember the notice, fleet-wide (a spot instance about to be reclaimed is not
        ours to start). A store that cannot be reached fails this plugin's call: the
        notice comes back and is noted then."""
        if event.instance_id and self.started:
            ctx.remember(f"interrupted/{event.instance_id}", time.time(), INTERRUPTION_MEMORY_SECONDS)
        return ctx.skip("noted: a spot instance about to be reclaimed is not restarted")  # not handling

    @hookimpl
    def on_state_change(self, event, ctx):
        if event.state != "Stopped" or not event.instance_id:
            return ctx.skip(f"only Stopped instances are restarted, this is {event.state or 'no state'}")
        if not self.started:
            raise RuntimeError("restart plugin is not started (on_startup was not called)")
        if not _in_our_region(event, ctx):
            return ctx.skip(f"event is for region {event.region}, this worker serves {ctx.region}")
        return _restart(event, ctx)


def _restart(event, ctx) -> Any:
    cfg: Config = ctx.config
    iid = event.instance_id
    first_sight = ctx.deferred_since is None
    try:
        instance = describe_instance(ctx.cloud, iid)
        unverified = None
    except Exception as exc:  # a failure (the message comes back), or in a dry run an unchecked plan
        instance, unverified = None, ctx.unverified(exc, "ECS")

    if unverified is None:
        if instance is None:
            return ctx.skip(f"not restarting {iid}: no such instance (released?)")
        if not has_tag(instance, cfg.require_tag):
            return ctx.skip(f"not restarting {iid}: no opt-in tag {cfg.require_tag}")
    if first_sight and cfg.grace_seconds:
        # Any return from a deferral means the grace has passed: the queue is the timer.
        # (Measuring from `deferred_since` would restart the grace after every deferral,
        # e.g. one for the global budget, and could wait forever.)
        ctx.defer(max(cfg.grace_seconds, 1.0), f"grace period before restarting {iid}")
        return "waiting out the grace period"
    if unverified is not None:
        ctx.plan("StartInstance", [iid], note=unverified)
        return f"planned StartInstance ({unverified})"

    reason = skip_reason(instance, ctx.recall(f"interrupted/{iid}") is not None)
    if reason:
        return ctx.skip(f"not restarting {iid}: {reason}")
    grant = ctx.take(ctx.budget("per-instance", cfg.max_restarts_per_hour, HOUR).of(iid),
                     ctx.budget("all", cfg.max_restarts_per_minute, MINUTE))
    if grant.blocked == "per-instance":
        ctx.log.error("not restarting %s: it was restarted %d times in the last hour "
                      "(max_restarts_per_hour); giving up until an operator looks at it",
                      iid, cfg.max_restarts_per_hour)
        return ctx.skip(f"not restarting {iid}: max_restarts_per_hour reached")
    if not grant:
        why = "the state store is unreachable" if grant.blocked == "store" else "max_restarts_per_minute reached"
        ctx.defer(max(grant.wait, 1.0), why)
        return f"waiting: {why}"
    try:
        outcome = ctx.act("StartInstance", iid, start_instance, ctx.cloud, iid)
    except Exception:
        grant.give_back()
        raise
    if outcome == ALREADY_STARTED or ctx.dry_run:
        grant.give_back()  # someone else started it / nothing was started
    return f"planned StartInstance {iid}" if ctx.dry_run else f"StartInstance {iid}: {outcome}"


def _in_our_region(event, ctx) -> bool:
    if event.region and event.region != ctx.region:
        ctx.log.warning("not restarting %s: event is for region %s, this worker serves %s",
                        event.instance_id, event.region, ctx.region)
        return False
    return True
