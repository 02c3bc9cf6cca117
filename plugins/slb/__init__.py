"""Built-in `slb` plugin: take a spot instance out of every load-balancer group it is in —
CLB vserver groups, ALB and NLB server groups — well inside the ~5 minute interruption
notice, even when a whole wave arrives at once.

The hook returns a `Future` at once; a coalescer gathers the instances of events that
arrive within `coalesce_ms`, finds their groups (configured, or discovered), and removes
them with one call per group per batch: CLB `RemoveVServerGroupBackendServers` (20
servers), ALB/NLB `RemoveServersFromServerGroup` (200 servers; asynchronous, so the job
is followed to its end, bounded by `job_timeout`). Every event still records its own
action per group and port (`rsp-…/i-…:80`, `alb:sgp-…/i-…:80`, `nlb:sgp-…/i-…:80`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ecs_worker import hookimpl, setting

from ..lb.entry import KINDS as LB_KINDS
from .remover import DRAIN, REMOVE, Remover

__all__ = ["Config", "SlbPlugin", "Remover", "drain_budget"]
NOTICE_SECONDS = 300       # Alibaba releases a spot instance about 5 minutes after the notice
REMOVE_MARGIN_SECONDS = 60  # a drain always leaves this long for the removal itself


@dataclass(frozen=True)
class Config:
    vserver_groups: list[str] = setting([], doc="groups to check; empty = discover through the SLB API")
    coalesce_ms: int = setting(200, min=0, max=5000, doc="window that gathers a wave into batches")
    drain_seconds: float = setting(0.0, min=0, max=240,
                                   doc="set weight 0 first and remove after this long; 0 = remove at once")
    discovery_ttl: float = setting(10.0, min=0, max=300, doc="seconds group lists and members are cached")
    workers: int = setting(4, min=1, max=32, doc="parallel reads; 4 senders each (one per group), within the rate")
    kinds: list[str] = setting(list(LB_KINDS), doc='load balancers to act on: "clb", "alb", "nlb"')
    alb_server_groups: list[str] = setting([], doc="ALB server groups to check; empty = discover")
    nlb_server_groups: list[str] = setting([], doc="NLB server groups to check; empty = discover")
    job_timeout: float = setting(60.0, min=1, max=240, doc="seconds an ALB/NLB change job may take")


class SlbPlugin:
    """One registration: its remover (coalescing thread, senders, caches) lives from
    `on_startup` to `on_shutdown`."""

    name = "slb"
    Config = Config

    def __init__(self) -> None:
        self.remover: Remover | None = None
        self._lock = threading.Lock()

    @hookimpl
    def on_startup(self, ctx):
        cfg: Config = ctx.config
        if any(not g.strip() for g in cfg.vserver_groups + cfg.alb_server_groups + cfg.nlb_server_groups):
            raise ValueError("[plugins.slb] server group ids must not be empty")
        unknown = sorted(set(cfg.kinds) - set(LB_KINDS))
        if unknown or not cfg.kinds:
            raise ValueError(f"[plugins.slb] kinds: {unknown[0] if unknown else 'empty'}: "
                             f"choose from {', '.join(LB_KINDS)}")
        ctx.cloud  # builds the cloud client now, so a bad [credentials] section fails at start-up
        with self._lock:
            if self.remover is not None:
                self.remover.close()
            self.remover = Remover(ctx.cloud, ctx.dry_run, cfg)
        ctx.log.info("slb: %s (%s), coalescing %d ms%s",
                     f"vserver groups {', '.join(cfg.vserver_groups)}" if cfg.vserver_groups
                     else "discovering groups", ", ".join(cfg.kinds).upper(), cfg.coalesce_ms,
                     f", draining {cfg.drain_seconds:g}s first" if cfg.drain_seconds else "")

    @hookimpl
    def on_shutdown(self, ctx):
        with self._lock:
            remover, self.remover = self.remover, None
        if remover is not None:
            remover.close()

    @hookimpl
    def on_preemptible_interruption(self, event, ctx):
        if not event.instance_id:
            return ctx.skip("the notice names no instance")
        if event.action != "delete":  # only "delete" releases the instance (ECS spot interruption event)
            ctx.log.warning("not removing %s from SLB: interruption action is %r, not 'delete'",
                            event.instance_id, event.action)
            return ctx.skip(f"interruption action is {event.action!r}, not 'delete'")
        remover = self.remover
        if remover is None:
            raise RuntimeError("slb plugin is not started (on_startup was not called)")
        if event.region and event.region != ctx.region:
            ctx.log.warning("not removing %s from SLB: event is for region %s, this worker serves %s",
                            event.instance_id, event.region, ctx.region)
            return ctx.skip(f"event is for region {event.region}, this worker serves {ctx.region}")
        cfg: Config = ctx.config
        if cfg.drain_seconds and ctx.deferred_since is None:
            drain = drain_budget(event.time, cfg.drain_seconds, time.time())
            if drain >= 1:
                ctx.defer(drain, f"draining {event.instance_id} for {drain:.0f}s before removal")
                return remover.submit(event.instance_id, ctx, DRAIN)
        return remover.submit(event.instance_id, ctx, REMOVE)


def drain_budget(notice_time, drain_seconds: float, now: float) -> float:
    """How long we may drain: configured, but never eating into the removal's margin."""
    if notice_time is None:
        return drain_seconds
    left = notice_time.timestamp() + NOTICE_SECONDS - REMOVE_MARGIN_SECONDS - now
    return max(0.0, min(drain_seconds, left))
