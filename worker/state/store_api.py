"""The one state-store interface. Two implementations: `store.Store` (SQLite in
`state_dir`, the default, shared by the workers of one host that share the directory) and
`store_redis.RedisStore` (shared by every worker pointed at the server). The contract
tests (`tests/test_store_contract.py`) run the same cases against both.

What it keeps: settled keys (dedupe), attempt counts and resume lists, crash suspects,
claims on running messages (a copy of a running message waits; a claim ends with its
owner's run: settled, failed, deferred, or given back unsettled — `unclaim` — or when it
lapses), the dead-letter record,
and for plugins (through `ctx`, `fleet.py`): budgets, small state, and load-balancer
removal reservations. Every method raises `StoreError` when the store cannot be used.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from .store_types import Attempt, Reserved, Slot, Taken


class StateStore(Protocol):
    dedupe_ttl: float
    dead_letter_path: Any

    def take(self, keys: Sequence[str], max_attempts: int, owners: Sequence[str] = (),
             hold: float = 0) -> list[Attempt]:
        """A received batch, in one step: settled before? attempts, resume, suspect; with
        `owners` (a message id for each of the first len(owners) keys; the rest are only
        looked up) each such unsettled key is claimed for `hold` s."""

    def mark_settled_many(self, keys: Sequence[str]) -> None:
        """Remember `keys` as settled for `dedupe_ttl`; forget their attempts and claims."""

    def failed(self, key: str, plugins: Mapping[str, float | None] | None, crashed: bool = False,
               owner: str = "") -> int:
        """Count a failed attempt, keep the plugins to resume, end `owner`'s claim (if it
        still holds it); the count. No longer a crash suspect, unless it `crashed` its
        quarantine process."""

    def deferred(self, key: str, plugins: Mapping[str, float | None], attempts: int | None = None,
                 owner: str = "") -> None:
        """Keep the plugins to resume (not an attempt), end `owner`'s claim (if it still holds it)."""

    def unclaim(self, claims: Sequence[tuple[str, str]]) -> None:
        """End each (key, owner) claim that owner still holds, in one step: its run of the
        message ended unsettled (released, put off, kept); another owner's claim stays."""

    def crashed(self, charged: Sequence[str], suspects: Sequence[str]) -> None:
        """A worker died with `suspects` running; `charged` also count an attempt."""

    def purge(self) -> None:
        """Forget what expired."""

    def record_dead_letter(self, record: Mapping[str, Any]) -> bool:
        """Append to this host's dead-letter file, once per message id."""

    def take_budgets(self, slots: Sequence[Slot], token: str) -> Taken:
        """One unit of every budget, all or none, atomically; by the store's clock."""

    def give_back(self, keys: Sequence[str], token: str) -> None:
        """Undo the take `token` made of these budgets."""

    def put_state(self, key: str, value: Any, ttl: float) -> None:
        """Keep a JSON-ready value for `ttl` seconds."""

    def get_state(self, key: str) -> Any:
        """The value kept, or None."""

    def delete_state(self, key: str) -> None:
        """Forget a value."""

    def reserve_removal(self, group: str, holder: str, healthy: Sequence[str], keep: int,
                        max_out_share: float, ttl: float, force: bool = False) -> Reserved:
        """Reserve taking `holder` out of `group`, whose healthy members now are `healthy`
        (`store_sqlite_shared.judge` is the rule); `force` (a reclaimed spot instance) is
        always granted, and counted."""

    def force_removals(self, removals: Sequence[tuple[str, str]], ttl: float) -> None:
        """Count each (group, holder) out of its group for `ttl` seconds, never refused (a
        batch of reclaimed spot instances): `reserve_removal(..., force=True)` for them all,
        in one atomic step."""

    def release_removal(self, group: str, holder: str) -> None:
        """`holder` is back in (or gone for good): its reservation ends."""

    def problem(self) -> str | None:
        """Why the store cannot be used now, or None."""

    def forked(self) -> "StateStore":
        """The same store for a forked child (`quarantine.py`): its own connection (or
        client and pool) and locks, none of the parent's."""

    def close(self) -> None: ...
