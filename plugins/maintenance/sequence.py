"""The maintenance plugin's sequence for one event, resumed at the step its state names:
wait for the window, record and take out the load-balancer memberships, reboot, wait for
Running, put every membership back (see the package docstring)."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from ..lb import guard
from ..lb.actions import action_name
from ..lb.health import ListenerHealth
from ..lb.membership import LoadBalancers, Membership, by_group
from . import guard_wait
from .facts import DONE_BY_REBOOT, event_status, instance_of
from .outcome import STEPS as OUTCOME_STEPS, Outcome
from .records import EventRecords
from .verify import has_tag, resumed_claim
from .window import plan_time, zone as _zone

# O&M event type -> what the owner may do before notBefore to settle it (the event becomes
# Avoided): ECS "System events" docs; RedeployInstance is documented for Scheduled
# SystemMaintenance.Reboot / .Redeploy. Redeploying an instance with local disks clears them.
REMEDIES = {"SystemMaintenance.Reboot": "RebootInstance", "SystemFailure.Reboot": "RebootInstance",
            "InstanceFailure.Reboot": "RebootInstance", "SystemMaintenance.Redeploy": "RedeployInstance"}
LB_KINDS = ("clb", "alb", "nlb")
MAX_DEFER = 43200  # one deferral at most; a longer wait is re-computed on each return
WAIT, DRAINED, REBOOTING, RESTORE = guard_wait.WAIT, "drained", "rebooting", "restore"


class Sequence:
    """One event's sequence, resumed at the step its state names."""

    max_defer = MAX_DEFER

    def __init__(self, event, ctx, cfg, state: dict, health: ListenerHealth | None = None) -> None:
        self.event, self.ctx, self.cfg, self.state = event, ctx, cfg, dict(state)
        self.health = health  # the plugin's ALB/NLB listener cache, for the guard's health reads
        self.iid: str = event.instance_id
        self.remedy = REMEDIES.get(event.event_type or "", "RebootInstance")
        self.lbs = LoadBalancers(ctx.cloud, cfg.kinds, cfg.job_timeout)

    def run(self) -> Any:
        step = self.state.get("step", WAIT)
        if step == WAIT:
            return self.wait_or_act()
        members = self._members()
        if self.ctx.dry_run:
            status = "Scheduled"
        else:  # what the state claims, checked against the cloud before anything is changed
            why, status = resumed_claim(self, members)
            if why:  # the sequence ends here: its guard reservations end with it
                guard.release(self.ctx, self.iid, members)
                out = f"; {_groups(members)} group(s) it names stay as they are" if members else ""
                self.ctx.log.error("maintenance of %s: not acting on the resumed %r step: %s%s",
                                   self.iid, step, why, out)
                return self.ctx.skip(f"maintenance of {self.iid}: not acting on the resumed {step!r} step: {why}")
        if step == DRAINED:
            if status in DONE_BY_REBOOT:  # rebooted already (a worker killed during the call)
                self.ctx.log.info("maintenance of %s: the event is %s: not rebooting again", self.iid, status)
                return self.await_running(members)
            if status != "Scheduled":
                return self.restore(members, f"(the event is {status}; not rebooting)")
            return self.remove_and_reboot(members)
        if step == REBOOTING:
            return self.await_running(members)
        if step == RESTORE:
            return self._verified(self.restore(members, "after an earlier failure"), members)
        if step in OUTCOME_STEPS:
            return Outcome(self).run(step, members)
        raise RuntimeError(f"maintenance: unknown step {step!r} in the resume state")

    # -- 1. when ------------------------------------------------------------------
    def wait_or_act(self) -> Any:
        cfg, ctx = self.cfg, self.ctx
        now = time.time()
        if now >= self.event.not_before.timestamp():
            if self.state.get("guard"):  # the last wait for the guard overran notBefore
                guard_wait.missed(self, self.state["guard"])
            ctx.log.warning("maintenance of %s: notBefore %s has passed; the platform acts now",
                            self.iid, self.event.not_before.isoformat())
            return ctx.skip(f"notBefore {self.event.not_before.isoformat()} has passed; the platform acts now")
        act_at, why = plan_time(now, self.event.not_before, cfg.window, _zone(cfg.timezone),
                                cfg.margin_minutes * 60)
        if why:
            ctx.log.warning("maintenance of %s: %s", self.iid, why)
        planned_early = ctx.dry_run and self.state.get("step") == WAIT  # dry-run: the wait counts as over
        if act_at > now + 1 and not planned_early:
            wait = min(act_at - now, MAX_DEFER)
            ctx.defer(wait, f"maintenance of {self.iid} at {_iso(act_at)}", state={"step": WAIT, "act_at": act_at})
            return f"waiting until {_iso(act_at)} (notBefore {self.event.not_before.isoformat()})"
        return self.act()

    # -- 2./3. check, record, drain or remove ------------------------------------------
    def act(self) -> Any:
        ctx = self.ctx
        try:
            instance = instance_of(self.ctx, self.iid)
            status = event_status(self.ctx, self.event)
        except Exception as exc:
            if not ctx.dry_run:
                raise  # nothing changed yet: the message comes back and we look again
            return self._plan_unverified(f"unverified: could not read ECS: {_code(exc)}")
        if instance is None:
            return ctx.skip(f"maintenance of {self.iid}: no such instance (released?)")
        if not has_tag(instance, self.cfg.require_tag):
            return ctx.skip(f"maintenance of {self.iid}: not opted in (no tag {self.cfg.require_tag})")
        if status != "Scheduled":
            return ctx.skip(f"maintenance of {self.iid}: the event is "
                            f"{status or 'not found by its id (DescribeInstanceHistoryEvents)'}; nothing to do")
        if instance.get("Status") != "Running":
            return ctx.skip(f"maintenance of {self.iid}: it is {instance.get('Status')}, not Running; "
                            "the platform's reboot is left to it")
        if EventRecords(ctx.state_dir).recently_rebooted(self.event.content.get("eventId")):  # Alibaba: 12 h
            ctx.log.warning("maintenance of %s: rebooted for this event less than 12 h ago; not again", self.iid)
            return Outcome(self).guard([])
        members = self.lbs.memberships(self.iid)
        held_back = guard.reserve(ctx, self.iid, members, self.health)
        if held_back:
            return guard_wait.wait(self, held_back)
        grant = ctx.take(ctx.budget("reboots", self.cfg.max_reboots_per_minute, 60))
        if not grant:
            guard.release(ctx, self.iid, members)
            why = "the state store is unreachable" if grant.blocked == "store" else "max_reboots_per_minute reached"
            ctx.defer(max(grant.wait, 1.0), why, state={"step": WAIT})
            return f"waiting: {why}"
        # Recorded, and settled with the message, before anything changes: a worker killed
        # while removing or rebooting leaves a message that still knows what to put back.
        self._save(DRAINED, members)
        if self.cfg.drain_seconds and members:
            try:
                self._each_group(members, "weight", self.lbs.drain)
            except Exception as exc:
                self._abort(members, exc)
            ctx.defer(self.cfg.drain_seconds, f"draining {self.iid} before maintenance",
                      state=self._state(DRAINED, members))
            return f"draining {self.iid} in {_groups(members)} group(s)"
        ctx.defer(1, f"memberships of {self.iid} recorded", state=self._state(DRAINED, members))
        return f"recorded {len(members)} load-balancer membership(s) of {self.iid}"

    # -- 3./4. remove and reboot ----------------------------------------------------
    def remove_and_reboot(self, members: list) -> Any:
        ctx = self.ctx
        try:
            held_back = guard_wait.at_removal(self, members)  # the guard's limit, judged again now
        except Exception as exc:  # a failed read: put back what a drain changed, and retry
            self._abort(members, exc)
        if held_back:
            if self.cfg.drain_seconds and members:
                self.restore(members, "while the load-balancer guard holds it back")  # its weight
            return guard_wait.wait(self, held_back)
        try:
            self._each_group(members, "remove", self.lbs.remove)
            instance = None if ctx.dry_run else instance_of(self.ctx, self.iid)
            status = instance.get("Status") if instance else None
            if ctx.dry_run or status == "Running":
                ctx.act(self.remedy, self.iid, self._reboot)
            elif status in ("Stopping", "Starting"):  # ours, before a worker restart
                ctx.log.info("maintenance of %s: a %s is under way already (%s)", self.iid, self.remedy, status)
            else:
                raise RuntimeError(f"{self.iid} is {status or 'gone'}, not Running: not rebooting it")
        except Exception as exc:
            self._abort(members, exc)
        self.state["rebooted_at"] = time.time()
        ctx.defer(self.cfg.poll_seconds, f"waiting for {self.iid} to be Running again",
                  state=self._state(REBOOTING, members))
        return f"{self.remedy} {self.iid}; out of {_groups(members)} group(s)"

    def _reboot(self) -> str:
        self.ctx.cloud.ecs(self.remedy, InstanceId=self.iid)
        EventRecords(self.ctx.state_dir).update(self.event.content.get("eventId"), rebooted_at=time.time())
        return "under way"

    # -- 4./5. wait, then restore ----------------------------------------------------
    def await_running(self, members: list) -> Any:
        ctx = self.ctx
        self._save(REBOOTING, members)  # a failed read keeps the sequence
        if not ctx.dry_run:  # dry-run rebooted nothing: straight to the restore plan
            instance = instance_of(self.ctx, self.iid)
            status = instance.get("Status") if instance else "released"
            if status != "Running":
                waited = time.time() - float(self.state.get("rebooted_at") or time.time())
                if waited > self.cfg.reboot_timeout:
                    self._fail(f"{self.iid} is {status}, not Running, {waited:.0f}s after {self.remedy}", members)
                ctx.defer(self.cfg.poll_seconds, f"waiting for {self.iid} to be Running again (it is {status})",
                          state=self._state(REBOOTING, members))
                return f"{self.iid} is {status}"
        return self._verified(self.restore(members, "after the reboot"), members)

    def _verified(self, done: str, members: list) -> Any:
        """Back in after our reboot: success only once the event is seen to change (outcome.py)."""
        return done if self.ctx.dry_run or not self.state.get("rebooted_at") else Outcome(self).verify(members)

    def restore(self, members: list, when: str) -> Any:
        self._save(RESTORE, members)
        still_out, error = self._restore_all(members)
        if still_out:
            self._save(RESTORE, still_out)  # the return retries these
            self._fail(f"could not put {self.iid} back {when} ({_code(error)})", still_out, _line(error))
        plan = "planned: " if self.ctx.dry_run else ""
        verb = "redeployed" if self.remedy == "RedeployInstance" else "rebooted"
        return f"{plan}{verb} {self.iid} before notBefore; back in {_groups(members)} group(s)"

    def _abort(self, members: list, exc: Exception) -> None:
        """Something failed after the memberships were recorded: put back what we took out."""
        still_out, again = self._restore_all(members)
        if still_out:
            self._save(RESTORE, still_out)
            self._fail(f"maintenance of {self.iid} failed ({_code(exc)}) and putting it back failed "
                       f"({_code(again)})", still_out, f"{_line(exc)}; {_line(again)}")
        self.ctx.save_state(None)  # nothing owed: a later attempt starts afresh
        raise RuntimeError(f"maintenance of {self.iid} failed: {_line(exc)}; "
                           f"it is back in {_groups(members)} group(s)") from None

    def _fail(self, what: str, out: list, detail: str = "") -> None:
        """Fail loudly with what is still out first (the outcome's error is one short line;
        the log line carries every entry and the errors in full)."""
        targets = ", ".join(f"{m.target} (weight {m.weight})" for m in out)
        self.ctx.log.error("%s is OUT of service in %d group(s): %s — %s%s; the message returns to retry",
                           self.iid, _groups(out), targets, what, f" [{detail}]" if detail else "")
        raise RuntimeError(f"{self.iid} OUT of service in {targets}: {what}")

    def _plan_unverified(self, note: str) -> str:
        """Dry-run without the cloud (a laptop without credentials): the plan's shape, each
        group unknown (`?`), marked as unchecked."""
        unknown = [(kind, "?/" + self.iid if kind == "clb" else f"{kind}:?/{self.iid}") for kind in self.cfg.kinds]
        for kind, target in unknown:
            self.ctx.plan(action_name(kind, "remove"), [target], note=note)
        self.ctx.plan(self.remedy, [self.iid], note=note)
        for kind, target in unknown:
            self.ctx.plan(action_name(kind, "add"), [target], note=note)
        return f"planned {self.remedy} ({note})"

    # -- helpers ----------------------------------------------------------------------
    def _restore_all(self, members: list) -> tuple[list, Exception | None]:
        """Put every group back, each on its own (one failing group does not stop the
        others); return the memberships still out and the first error."""
        still_out, first = [], None
        for (kind, group), ms in by_group(members).items():
            try:
                self.ctx.act_many(action_name(kind, "add"), [m.target for m in ms], self.lbs.restore, kind, group, ms)
            except Exception as exc:
                still_out += ms
                first = first or exc
            else:  # back in this group: its guard reservation ends now, whatever the others do
                guard.release(self.ctx, self.iid, ms)
        return still_out, first

    def _each_group(self, members: list, change: str, method) -> None:
        for (kind, group), ms in by_group(members).items():
            self.ctx.act_many(action_name(kind, change), [m.target for m in ms], method, kind, group, ms)

    def _members(self) -> list:
        return [Membership.from_json(m) for m in self.state.get("members") or []]

    def _timing(self) -> dict:
        return {k: v for k, v in self.state.items() if k in ("act_at", "rebooted_at")}

    def _state(self, step: str, members: list) -> dict:
        return {**self._timing(), "step": step, "members": [m.to_json() for m in members]}

    def _save(self, step: str, members: list) -> None:
        self.ctx.save_state(self._state(step, members))


def _groups(members: list) -> int:
    return len({(m.kind, m.group) for m in members})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _code(exc: BaseException | None) -> str:
    return str(getattr(exc, "code", None) or type(exc).__name__)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
