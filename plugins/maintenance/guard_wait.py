"""When the load-balancer guard (`[guard]`, `plugins/lb/guard.py`) holds a maintenance removal
back: wait, never skip — until notBefore would come first; then say so loudly (an error, and a
failed outcome that notifies) and leave the instance in: the platform's reboot finds it in
service. Also the second look at the moment of removal: a reservation granted before the
drain is judged again just before the instance is taken out (`at_removal`)."""
from __future__ import annotations

import time

from ..lb import guard

WAIT = "wait"  # the sequence's first step (sequence.py), to which a held-back removal returns


def wait(seq, group: str) -> str:
    """Defer with the step at `wait` (the next return reserves anew), or fail at notBefore."""
    if seq.event.not_before.timestamp() - time.time() <= seq.cfg.poll_seconds:
        missed(seq, group)
    why = guard.held_back_why(seq.iid, group)
    seq.ctx.defer(seq.cfg.poll_seconds, f"waiting: {why}", state={"step": WAIT, "guard": group, **seq._timing()})
    return f"waiting: {why}"


def missed(seq, group: str) -> None:
    seq.ctx.log.error("maintenance of %s: %s, and notBefore %s is here: NOT removing it; the platform's "
                      "reboot will hit it in service", seq.iid, guard.held_back_why(seq.iid, group),
                      seq.event.not_before.isoformat())
    seq.ctx.save_state(None)
    raise RuntimeError(f"{seq.iid} not taken out of service before notBefore: {guard.held_back_why(seq.iid, group)}")


def at_removal(seq, members: list) -> str | None:
    """None when every reservation still holds now; else the group that no longer allows
    the removal (nothing is held then). A group that lost healthy members since the grant —
    a spot instance reclaimed meanwhile counts against it (`count_forced`) — must not lose
    this one too: the guard's limit holds when the instance goes out, not only when asked."""
    drained = bool(seq.cfg.drain_seconds) and bool(members)
    group = guard.confirm(seq.ctx, seq.iid, members, seq.health, drained=drained)
    if group is not None:
        seq.ctx.log.warning("maintenance of %s: %s now (granted earlier); %swaiting", seq.iid,
                            guard.held_back_why(seq.iid, group), "its weight goes back; " if drained else "")
    return group
