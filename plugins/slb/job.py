"""One event's part in the slb plugin's coalesced work: its backend entries, each done by a
batched call, and the outcome the event reports once all are."""
from __future__ import annotations

import threading
from concurrent.futures import Future

from ..lb.actions import CLB_REMOVE, CLB_WEIGHT

REMOVE, DRAIN = CLB_REMOVE, CLB_WEIGHT  # a job's kind, named by its CLB action


class Job:
    """One event's request; its future resolves when every backend entry is done."""

    def __init__(self, instance_id: str, ctx, kind: str) -> None:
        self.instance_id, self.ctx, self.kind = instance_id, ctx, kind
        self.future: Future = Future()
        self._remaining = 0
        self._groups: set = set()
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def expect(self, entries: int) -> None:
        self._remaining = entries

    def fail_later(self, error: BaseException) -> None:
        """Fail once the rest is done (another kind's groups could not be read)."""
        self._error = self._error or error

    def entry_done(self, backend, error: BaseException | None) -> None:
        with self._lock:
            self._remaining -= 1
            self._groups.add(backend.key)
            if error is not None and self._error is None:
                self._error = error
            last = self._remaining == 0
        if last:
            self.finish()

    def finish(self, nothing: bool = False) -> None:
        if self.future.done():
            return
        if self._error is not None:
            self.future.set_exception(self._error)
        elif nothing:
            self.ctx.cancel_defer()  # nothing to drain: no reason to come back later
            self.future.set_result(None)
        else:
            verb = {REMOVE: "removed from", DRAIN: "weight 0 in"}[self.kind]
            plan = "planned: " if self.ctx.dry_run else ""
            self.future.set_result(f"{plan}{verb} {_describe(self._groups)}")

    def fail(self, error: BaseException) -> None:
        self._error = error
        self.finish()


def _describe(groups: set[tuple[str, str]]) -> str:
    """"2 vserver group(s), 1 ALB server group(s)": the groups an instance left, by kind."""
    parts = []
    for lb, name in (("clb", "vserver group(s)"), ("alb", "ALB server group(s)"), ("nlb", "NLB server group(s)")):
        n = sum(1 for kind, _ in groups if kind == lb)
        if n:
            parts.append(f"{n} {name}")
    return ", ".join(parts) or "0 groups"
