"""Built-in `scaling` plugin: Auto Scaling (ESS) lifecycle hooks — out of every load balancer
before ESS removes an instance, and the lifecycle action completed once every plugin taking
the hook is done.

On `LifecycleHook:SCALE_IN` it reads the action back from ESS (`DescribeLifecycleActions`:
a forged notification removes nothing; only instances ESS lists are touched), then takes each
instance out of every CLB/ALB/NLB group it is in with the `slb` plugin's coalescing remover
(optional drain first). That works under both readings of when ESS detaches the groups
attached to the scaling group (before the wait, or after it): whatever ESS removed already is
simply not found. On `LifecycleHook:SCALE_OUT` it has nothing to do but the completion.

The completion step (`complete_lifecycle_action`, after every other plugin taking the hook)
completes the action `CONTINUE`, or keeps it open with heartbeats while others still work, or
applies the configured result on failure (see completion.py). The state that travels with the
message (`holding_since`, `heartbeats`) lets any worker finish what another began; nothing in it
can skip a check.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from ecs_worker import LIFECYCLE_RESULTS, hookimpl, setting

from ..slb import Config as SlbConfig
from ..slb.remover import DRAIN, REMOVE, Remover
from . import ess
from .completion import complete_step

__all__ = ["Config", "ScalingPlugin"]


@dataclass(frozen=True)
class Config(SlbConfig):
    """The `slb` plugin's load-balancer settings (groups, kinds, coalescing, drain), plus:"""

    # a hook waits at least 30 s: a longer window than a spot wave's gathers more into each call
    coalesce_ms: int = setting(1000, min=0, max=5000, doc="window that gathers a scale-in wave into batches")
    scaling_groups: list[str] = setting([], doc="scaling groups whose lifecycle hooks `setup` creates and `doctor` checks")
    hook_heartbeat_timeout: int = setting(600, min=30, max=21600, doc="HeartbeatTimeout of the hooks `setup` creates")
    on_failure: str = setting("CONTINUE", choices=LIFECYCLE_RESULTS, doc="scale-in result when a plugin failed (ROLLBACK keeps the instance)")
    on_launch_failure: str = setting("ABANDON", choices=LIFECYCLE_RESULTS, doc="scale-out result when a plugin failed (ABANDON releases it)")
    heartbeat_seconds: float = setting(0.0, min=0, max=21600,
                                       doc="heartbeat at most this often while plugins work; 0 = half the hook's timeout")
    max_hold_minutes: float = setting(60.0, min=0.01, max=10080, doc="then complete with the failure result")


class ScalingPlugin:
    """One registration: its remover (made on the first lifecycle event) lives until `on_shutdown`."""

    name = "scaling"
    Config = Config

    def __init__(self) -> None:
        self.remover: Remover | None = None
        self._lock = threading.Lock()

    @hookimpl
    def on_shutdown(self, ctx):
        with self._lock:
            remover, self.remover = self.remover, None
        if remover is not None:
            remover.close()

    @hookimpl(tryfirst=True)
    def on_lifecycle_hook(self, event, ctx):
        lc = event.lifecycle
        if event.region and event.region != ctx.region:
            ctx.log.warning("not handling lifecycle action %s: it is for region %s, this worker serves %s",
                            lc.token, event.region, ctx.region)
            return None
        if lc.transition != "SCALE_IN":
            return None  # a launch: nothing to take out (the completion step waits for the others)
        # Verify before touching any instance — on every delivery: the removal is idempotent (what
        # is out already is not found), so nothing carried in the message can skip it.
        found = ess.read_or_plan(ctx, lc)
        if found is None:
            ctx.log.warning("lifecycle action %s: ESS knows no such action in activity %s of %s; touching nothing",
                            lc.token, lc.scaling_activity_id, lc.scaling_group_id)
            return None
        if not found.pending:
            return None  # ended already: the completion step says how
        ids = [i for i in lc.instance_ids if i in found.instance_ids]
        cfg: Config = ctx.config
        kind = REMOVE
        drained = time.time() - ctx.deferred_since if ctx.deferred_since is not None else None
        if cfg.drain_seconds and not ctx.dry_run and (drained is None or drained < cfg.drain_seconds):
            ctx.defer(cfg.drain_seconds - (drained or 0), f"draining {', '.join(ids)} before removal")
            if drained is not None:  # back early (a heartbeat): weight 0 already, keep draining
                return f"draining {', '.join(ids)}"
            kind = DRAIN
        return _gather(ids, [self._remover(ctx).submit(i, ctx, kind) for i in ids])

    @hookimpl
    def complete_lifecycle_action(self, event, result, ctx):
        return complete_step(event, result, ctx, ctx.config)

    def _remover(self, ctx) -> Remover:
        with self._lock:
            if self.remover is None:
                self.remover = Remover(ctx.cloud, ctx.dry_run, ctx.config, spot_check=False)  # ESS verified them
            return self.remover


def _gather(ids: list[str], futures: list[Future]) -> Future | None:
    """One future for an event's instances: their texts joined, or the first failure."""
    if not futures:
        return None
    out: Future = Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            out.set_exception(errors[0])
        else:
            texts = list(dict.fromkeys(f"{i}: {f.result()}" for i, f in zip(ids, futures) if f.result()))
            out.set_result("; ".join(texts) if texts else None)

    for f in futures:
        f.add_done_callback(one_done)
    return out
