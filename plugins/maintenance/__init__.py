"""Built-in `maintenance` plugin: reboot an instance yourself before a scheduled O&M reboot.

ECS announces maintenance days ahead (`Instance:SystemMaintenance.Reboot:Scheduled`, with
`notBefore`). Rebooting the instance yourself before `notBefore` settles it — the event
becomes `Avoided` (Alibaba Cloud ECS docs, "System events": "restart the instance before
the scheduled time") — at a time you choose and with the instance out of its load
balancers meanwhile, instead of at the platform's moment while it still takes traffic.
For instances carrying the opt-in tag (default `ecs-worker:maintenance=auto`):

1. wait — deferring, never blocking — until the configured `window` (e.g. "02:00-05:00"
   in `timezone`, or "now") that falls before `notBefore` minus `margin_minutes`; if no
   window fits, act at `notBefore` minus the margin, and say so;
2. re-read: the event still `Scheduled`, the instance `Running` and still opted in;
3. reserve the removal with the load-balancer guard, record every load-balancer
   membership (CLB, ALB, NLB: group, port, weight), drain (weight 0, `drain_seconds`) if
   asked, judge the reservations again, and take the instance out of every group;
4. `RebootInstance` (`RedeployInstance` for `SystemMaintenance.Redeploy`, when listed in
   `event_types`), then defer until the instance is `Running` again (re-read every
   `poll_seconds`, for at most `reboot_timeout`);
5. put every membership back exactly as recorded;
6. read the event by its id until it changes (`outcome_seconds`): `Avoided` settles it; still
   `Scheduled` (Alibaba: the handling failed) leaves the instance in service, says so at WARNING,
   takes it out again `takeout_seconds` before `notBefore` and back after the platform's reboot
   (`Executed`); never a second reboot for the same event within 12 h (`outcome.py`).

The step reached and the memberships travel with the message (`ctx.defer(state=...)`),
so any worker continues the sequence. Whatever fails after the removal, the instance is
never out silently: it is put back, or the outcome is `failed` with every group it is
still out of named (the webhook plugin notifies) and the message returns to try again.
In dry-run (and `replay --dry-run`) the whole plan is shown, deferrals counted as elapsed.
"""
from __future__ import annotations

from dataclasses import dataclass

from ecs_worker import hookimpl, setting

from ..lb.health import ListenerHealth
from .sequence import LB_KINDS, REMEDIES, Sequence
from .window import WINDOW, plan_time, zone as _zone

__all__ = ["Config", "MaintenancePlugin", "REMEDIES", "plan_time"]



@dataclass(frozen=True)
class Config:
    require_tag: str = setting("ecs-worker:maintenance=auto", doc='"key=value" or "key": the opt-in tag')
    event_types: list[str] = setting(["SystemMaintenance.Reboot"],
                                     doc="O&M event types to act on (reboot; .Redeploy: redeploy)")
    window: str = setting("now", doc='"HH:MM-HH:MM" (may cross midnight) in `timezone`, or "now"')
    timezone: str = setting("UTC", doc="IANA time zone of the window, e.g. Asia/Shanghai")
    margin_minutes: float = setting(30.0, min=0, max=1440, doc="act at least this long before notBefore")
    drain_seconds: float = setting(0.0, min=0, max=3600, doc="weight 0 this long before removal; 0 = none")
    poll_seconds: float = setting(15.0, min=1, max=600, doc="re-read the rebooting instance this often")
    reboot_timeout: float = setting(1200.0, min=30, max=86400, doc="seconds to wait for Running again")
    kinds: list[str] = setting(list(LB_KINDS), doc='load balancers to take it out of: "clb", "alb", "nlb"')
    job_timeout: float = setting(60.0, min=1, max=600, doc="seconds an ALB/NLB change job may take")
    max_reboots_per_minute: int = setting(5, min=1, max=1000,
                                          doc="all instances together (fleet-wide with a shared store)")
    outcome_seconds: float = setting(600.0, min=0, max=86400,
                                     doc="after the reboot, read the event this long for it to become Avoided")
    takeout_seconds: float = setting(300.0, min=0, max=86400,
                                     doc="not avoided: out of its groups this long before notBefore")


class MaintenancePlugin:
    """One registration; its reboot budget lives in the state store (`ctx.take`)."""

    name = "maintenance"
    Config = Config

    def __init__(self) -> None:
        self.started = False
        self.health: ListenerHealth | None = None

    @staticmethod
    def system_events(cfg: Config) -> list[str]:
        """The O&M notifications to deliver (the rule `setup` writes): each acted-on type, Scheduled."""
        return [f"Instance:{event_type}:Scheduled" for event_type in cfg.event_types]

    @hookimpl
    def on_startup(self, ctx):
        cfg: Config = ctx.config
        if cfg.window != "now" and not WINDOW.match(cfg.window):
            raise ValueError(f'[plugins.maintenance] window: {cfg.window!r}: use "HH:MM-HH:MM" or "now"')
        _zone(cfg.timezone)  # an unknown zone fails here, not at 3 a.m.
        unknown = sorted(set(cfg.event_types) - set(REMEDIES))
        if unknown or not cfg.event_types:
            raise ValueError(f"[plugins.maintenance] event_types: {unknown[0] if unknown else 'empty'}: "
                             f"choose from {', '.join(REMEDIES)} (events the owner may settle early)")
        bad = sorted(set(cfg.kinds) - set(LB_KINDS))
        if bad:
            raise ValueError(f"[plugins.maintenance] kinds: {bad[0]}: choose from {', '.join(LB_KINDS)}")
        ctx.cloud  # builds the cloud client now, so a bad [credentials] section fails at start-up
        self.health = ListenerHealth()  # which listeners serve each ALB/NLB group (the guard's reads)
        self.started = True

    @hookimpl
    def on_shutdown(self, ctx):
        self.started = False

    @hookimpl
    def on_system_event(self, event, ctx):
        cfg: Config = ctx.config
        state = ctx.resume_state if isinstance(ctx.resume_state, dict) else None
        if state is None:
            if event.event_status != "Scheduled" or event.event_type not in cfg.event_types:
                return ctx.skip(f"acts on Scheduled {', '.join(cfg.event_types)} only")
            if not event.instance_id:
                return ctx.skip("the notification names no instance")
            if event.region and event.region != ctx.region:
                ctx.log.warning("not handling maintenance of %s: event is for region %s, this worker serves %s",
                                event.instance_id, event.region, ctx.region)
                return ctx.skip(f"event is for region {event.region}, this worker serves {ctx.region}")
            if event.not_before is None:
                ctx.log.warning("not handling maintenance of %s: the notification has no notBefore", event.instance_id)
                return ctx.skip("the notification has no notBefore")
        if not self.started:
            raise RuntimeError("maintenance plugin is not started (on_startup was not called)")
        return Sequence(event, ctx, cfg, state or {}, self.health).run()
