"""After the reboot: did it avoid the event? The maintenance sequence's last steps.

Alibaba (ECS "Summary of system events"): "if the event status remains unchanged after the
instance is restarted, the event handling fails", and a new attempt should come no sooner than
12 hours later. So after `RebootInstance` and the restore, the event is read by its id
(`DescribeInstanceHistoryEvents`) until it changes or `outcome_seconds` pass:

- `Avoided` (or any other end: `Canceled`, `Executed`, `Failed`) → done, saying which;
- still `Scheduled` → the instance stays in service (it is healthy), a WARNING says so, and
  `takeout_seconds` before `notBefore` it is taken out of every group again (no second reboot:
  the platform reboots it), then put back once the event is `Executed` and the instance
  `Running`. Until then the outcome is deferred, never `handled`. That removal, too, is
  reserved against the load-balancer guard (`[guard]`, `plugins/lb/guard.py`).

Each step's state travels with the message, as the rest of the sequence's does, so a worker
killed between any two steps leaves the next one to whichever worker gets the message.
"""
from __future__ import annotations

import time
from typing import Any

from ..lb import guard as lb_guard
from . import guard_wait
from .facts import event_status, instance_of
from .records import EventRecords

VERIFY, GUARD, OUT = "verify", "guard", "out"
STEPS = (VERIFY, GUARD, OUT)
ACTIVE = ("Scheduled", "Executing", "Inquiring")  # the event still stands


class Outcome:
    """The steps after the restore, on the `Sequence` whose cloud, config and state they share."""

    def __init__(self, seq) -> None:
        self.seq = seq

    def run(self, step: str, members: list) -> Any:
        return {VERIFY: self.verify, GUARD: self.guard, OUT: self.await_executed}[step](members)

    def verify(self, members: list) -> Any:
        """Back in service after the reboot: read the event until it changes or the bound passes."""
        s = self.seq
        s._save(VERIFY, members)  # a failed read keeps the step
        status = event_status(s.ctx, s.event)
        groups = len({(m.kind, m.group) for m in members})
        verb = "redeployed" if s.remedy == "RedeployInstance" else "rebooted"
        if status is None:
            s.ctx.log.warning("maintenance of %s: %s, but the notification names no event id: "
                              "whether the event was avoided is unknown", s.iid, verb)
            return f"{verb} {s.iid}; back in {groups} group(s); the event's outcome is unknown (no event id)"
        if status not in ACTIVE:
            return f"{verb} {s.iid} before notBefore: the event is {status}; back in {groups} group(s)"
        waited = time.time() - float(s.state.get("rebooted_at") or time.time())
        if waited < s.cfg.outcome_seconds:
            s.ctx.defer(s.cfg.poll_seconds, f"is the event of {s.iid} avoided? ({status})",
                        state=s._state(VERIFY, members))
            return f"{verb} {s.iid}; the event is still {status}"
        s.ctx.log.warning("maintenance of %s: the reboot did not avoid the event (still %s %.0fs later); "
                          "it is back in service and will be taken out of its groups %.0fs before notBefore "
                          "%s for the platform's reboot (no second reboot: Alibaba advises 12 h between "
                          "attempts)", s.iid, status, waited, s.cfg.takeout_seconds,
                          s.event.not_before.isoformat())
        return self._until_takeout(status)

    def guard(self, members: list) -> Any:
        """Just before notBefore: still standing? Out of every group until the platform is done."""
        s = self.seq
        s._save(GUARD, [])
        status = event_status(s.ctx, s.event)
        if status not in ACTIVE:
            return f"the event of {s.iid} is {status} now: nothing to guard against"
        if time.time() < self._takeout_at():
            return self._until_takeout(status)
        members = s.lbs.memberships(s.iid)
        held_back = lb_guard.reserve(s.ctx, s.iid, members, s.health)  # [guard]: as for the first removal
        if held_back:  # wait, never skip; at notBefore: an error, and it stays in
            if s.event.not_before.timestamp() - time.time() <= s.cfg.poll_seconds:
                guard_wait.missed(s, held_back)
            why = lb_guard.held_back_why(s.iid, held_back)
            s.ctx.defer(s.cfg.poll_seconds, f"waiting: {why}", state=s._state(GUARD, []))
            return f"waiting: {why}"
        s._save(OUT, members)  # recorded before the change: a kill -9 now still knows what to put back
        taken = self._taken_out()  # and on this host, for whichever copy of the message settles first
        EventRecords(s.ctx.state_dir).update(s.event.content.get("eventId"),
                                             out=[m.to_json() for m in _union(taken, members)])
        try:
            s._each_group(members, "remove", s.lbs.remove)
        except Exception as exc:
            s._abort(members, exc)
        s.ctx.defer(s.cfg.poll_seconds, f"{s.iid} out of service for the platform's reboot",
                    state=s._state(OUT, members))
        return f"took {s.iid} out of {len({(m.kind, m.group) for m in members})} group(s) before notBefore"

    def await_executed(self, members: list) -> Any:
        """Out of service until the event is over and the instance Running again, then back in."""
        s = self.seq
        s._save(OUT, members)
        status = event_status(s.ctx, s.event)
        instance = instance_of(s.ctx, s.iid)
        running = bool(instance) and instance.get("Status") == "Running"
        if status in ACTIVE or not running:
            s.ctx.defer(s.cfg.poll_seconds, f"waiting for the platform's reboot of {s.iid} ({status})",
                        state=s._state(OUT, members))
            return f"{s.iid} out of service; the event is {status}"
        members = _union(members, self._taken_out())
        s.restore(members, f"after the platform's reboot (event {status})")
        EventRecords(s.ctx.state_dir).update(s.event.content.get("eventId"), out=None)
        return f"the platform rebooted {s.iid} (event {status}); back in {len({(m.kind, m.group) for m in members})} " \
               "group(s)"

    def _taken_out(self) -> list:
        from ..lb.membership import Membership

        record = EventRecords(self.seq.ctx.state_dir).get(self.seq.event.content.get("eventId"))
        return [Membership.from_json(m) for m in record.get("out") or []]

    def _takeout_at(self) -> float:
        return self.seq.event.not_before.timestamp() - self.seq.cfg.takeout_seconds

    def _until_takeout(self, status: str) -> str:
        s = self.seq
        wait = self._takeout_at() - time.time()
        if wait <= 0:
            return self.guard([])
        s.ctx.defer(min(wait, s.max_defer), f"event of {s.iid} still {status}: out of service at notBefore",
                    state=s._state(GUARD, []))
        return f"the reboot did not avoid the event of {s.iid} ({status}); it will be out of service at notBefore"


def _union(*groups: list) -> list:
    """Memberships once each (kind, group, server, port), the first record of each kept."""
    seen: dict = {}
    for members in groups:
        for m in members:
            seen.setdefault((m.kind, m.group, m.server_id, m.port), m)
    return list(seen.values())
