"""The scaling plugin's completion step: after every plugin taking the hook has answered,
complete the lifecycle action — or keep it open with a heartbeat while any is still working.

- all done (handled or ignored): `CONTINUE`;
- a plugin failed: the configured result (`on_failure` on a scale-in, once the instance is out
  of service; `on_launch_failure` on a scale-out);
- a plugin still working (deferred): `RecordLifecycleActionHeartbeat` and come back with it,
  at most every `heartbeat_seconds` (default: half the hook's HeartbeatTimeout), for at most
  `max_hold_minutes` — then the `on_failure` result, said so: a scale-in is never held hostage;
- this plugin's own part failed (the instance may still take traffic): heartbeat and let the
  message return, so the removal is tried again before ESS goes on — never completed by us
  (past `max_hold_minutes` the heartbeats stop and the hook's timeout and DefaultResult decide);
- the action is no longer Pending (timed out, completed elsewhere), or ESS refuses the token as
  not in process: settled with a line saying what ESS did; never retried.
"""
from __future__ import annotations

import time
from typing import Any

from ecs_worker import DEFERRED, FAILED

from . import ess

MIN_HEARTBEAT_SECONDS = 0.1  # never spin


def complete_step(event, result, ctx, cfg) -> Any:
    lc = event.lifecycle
    state = dict(ctx.resume_state) if isinstance(ctx.resume_state, dict) else {}
    found = ess.read_or_plan(ctx, lc)  # verify before acting: the action, as ESS has it now
    if found is None:
        ctx.log.warning("lifecycle action %s of %s: ESS knows no such action in activity %s; not completing",
                        lc.token, lc.scaling_group_id, lc.scaling_activity_id)
        return None
    if not found.pending:
        return _settled(ctx, lc, found)
    mine = result.plugins.get(ctx.plugin)
    others = {n: r for n, r in result.plugins.items() if n != ctx.plugin}
    failed = sorted(n for n, r in others.items() if r.status == FAILED)
    working = sorted(n for n, r in others.items() if r.status == DEFERRED)
    scale_in = lc.transition == "SCALE_IN"
    if mine is not None and mine.status == FAILED:  # maybe still in a load balancer: try again first,
        # and never complete it ourselves: past max_hold the hook's own timeout and DefaultResult decide
        return _hold(ctx, lc, cfg, state, [ctx.plugin], result, "failed to take it out of service", give_up=False)
    if mine is not None and mine.status == DEFERRED:  # draining
        return _hold(ctx, lc, cfg, state, [ctx.plugin], result, "draining")
    if failed:
        verdict = cfg.on_failure if scale_in else cfg.on_launch_failure
        return _complete(ctx, lc, verdict, f"after {', '.join(failed)} failed")
    if working:
        return _hold(ctx, lc, cfg, state, working, result, "still working")
    return _complete(ctx, lc, "CONTINUE", "every plugin taking the hook is done")


def _hold(ctx, lc, cfg, state: dict, who: list[str], result, why: str, give_up: bool = True) -> Any:
    since = state.get("holding_since") or time.time()
    if time.time() - since >= cfg.max_hold_minutes * 60:
        held = f"held {cfg.max_hold_minutes:g} min while {', '.join(who)} {why}"
        if not give_up:
            ctx.log.error("lifecycle action %s: %s; no more heartbeats: the hook's timeout and default result "
                          "decide", lc.token, held)
            return None
        verdict = cfg.on_failure if lc.transition == "SCALE_IN" else cfg.on_launch_failure
        return _complete(ctx, lc, verdict, held)
    try:
        ess.heartbeat(ctx, lc)
    except Exception as exc:
        if ess.ended(exc):
            found = ess.read_back(ctx, lc)
            return _settled(ctx, lc, found) if found and not found.pending else None
        raise
    every = cfg.heartbeat_seconds or max(MIN_HEARTBEAT_SECONDS, (_hook_timeout(ctx, lc) or 600) / 2)
    wanted = result.defer_seconds
    wait = max(MIN_HEARTBEAT_SECONDS, min(every, wanted) if wanted is not None else every)
    beats = int(state.get("heartbeats", 0)) + 1
    ctx.defer(wait, f"holding lifecycle action {lc.token} open: {', '.join(who)} {why}",
              state={**state, "holding_since": since, "heartbeats": beats})
    return f"hook kept open (heartbeat {beats}): {', '.join(who)} {why}"


def _hook_timeout(ctx, lc) -> int | None:
    try:
        return ess.hook_timeout(ctx, lc.hook_id)
    except Exception as exc:  # unreadable (a dry run without credentials): the documented default
        ctx.unverified(exc, "ESS")  # outside a dry run, raised again
        return None


def _complete(ctx, lc, verdict: str, why: str) -> Any:
    try:
        ess.complete(ctx, lc, verdict)
    except Exception as exc:
        if not ess.ended(exc):
            raise
        found = ess.read_back(ctx, lc)
        if found is None or found.pending:
            raise
        return _settled(ctx, lc, found)
    done = "planned: complete" if ctx.dry_run else "completed"
    ctx.log.info("lifecycle action %s (%s of %s in %s) %s %s: %s", lc.token, lc.transition,
                 ", ".join(lc.instance_ids), lc.scaling_group_id, done, verdict, why)
    return f"{done} {verdict}: {why}"


def _settled(ctx, lc, found) -> str:
    """The action ended without us (its heartbeat timeout passed — the token expired — or
    someone completed it): nothing more can be done; say what ESS did and settle."""
    line = (f"lifecycle action {lc.token} ({lc.transition} of {', '.join(lc.instance_ids)} in "
            f"{lc.scaling_group_id}) had already ended: {found.status}"
            f"{', result ' + found.result if found.result else ''} — ESS went on without us; settled")
    ctx.log.warning("%s", line)
    return line
