"""What plugins keep through `ctx` in the state store — the same calls whichever store
runs, shared by every worker that shares the store: budgets (`ctx.budget`, `ctx.take`),
small state (`ctx.remember`, `ctx.recall`, `ctx.forget`) and load-balancer removal
reservations (`ctx.reserve_removal`, `ctx.force_removals`, `ctx.release_removal`, the
guard).

Fail safe: a store that cannot be reached grants nothing — `ctx.take` answers "wait"
(`Grant.blocked == "store"`), a reservation is refused — so nothing budgeted happens
without its budget; the plugin defers and the message comes back.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..state.store_types import Slot, StoreError

log = logging.getLogger("ecs_worker.fleet")
STORE_RETRY_SECONDS = 15.0  # how soon a take refused for an unreachable store is worth retrying
MAX_STATE_TTL = 31 * 86400


@dataclass(frozen=True)
class Budget:
    """At most `limit` takes in any `per` seconds, counted by everyone sharing the store;
    `budget.of(key)` is the same budget counted per key (e.g. per instance)."""

    name: str
    limit: int
    per: float
    key: str = "*"

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or self.limit < 1 or not self.per > 0:
            raise ValueError(f"budget {self.name!r}: limit must be an integer >= 1 and per > 0")

    def of(self, key: str) -> "Budget":
        return Budget(self.name, self.limit, self.per, str(key))


@dataclass
class Grant:
    """`ctx.take`'s answer: true when every budget was taken. Otherwise `blocked` names the
    budget with no room ("store" when the store could not be reached) and `wait` says how
    many seconds until it has room. `give_back()` undoes a take whose action did not happen."""

    blocked: str | None = None
    wait: float = 0.0
    _undo: Any = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.blocked is None

    def give_back(self) -> None:
        if self._undo is not None:
            undo, self._undo = self._undo, None
            try:
                undo()
            except StoreError as exc:  # the take expires with its window anyway
                log.warning("could not give a budget back: %s", exc)


def take(store: Any, plugin: str, budgets: Sequence[Budget]) -> Grant:
    if not budgets:
        raise ValueError("take: name at least one budget")
    slots = [Slot(f"{plugin}/{b.name}/{b.key}", b.limit, b.per) for b in budgets]
    token = uuid.uuid4().hex
    try:
        taken = store.take_budgets(slots, token)
    except StoreError as exc:
        log.warning("%s: budget %s not taken: %s", plugin, budgets[0].name, exc)
        return Grant("store", STORE_RETRY_SECONDS)
    if taken.blocked is not None:
        return Grant(budgets[taken.blocked].name, taken.wait)
    return Grant(_undo=lambda: store.give_back([s.key for s in slots], token))


def state_key(plugin: str, key: str) -> str:
    return f"{plugin}/state/{key}"


def check_ttl(ttl: float) -> float:
    if not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_STATE_TTL:
        raise ValueError(f"ttl must be between 0 and {MAX_STATE_TTL} seconds, got {ttl!r}")
    return float(ttl)
