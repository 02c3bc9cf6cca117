"""What every state store answers in, whichever runs (`store_api.StateStore`): the
attempt found for a key, a budget slot and a budget's grant, and the store's error."""
from __future__ import annotations

from dataclasses import dataclass


class StoreError(RuntimeError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be reached now (a network fault, a failover): worth a retry, unlike
    a store that cannot work at all (an unusable `state_dir`)."""


@dataclass(frozen=True)
class Attempt:
    """What `take` found for one key."""

    settled: bool = False  # settled before: a redelivered copy, not to be handled again
    made: int = 0  # attempts made so far (failed or crashed alone)
    exhausted: bool = False  # `max_attempts` made already: give up
    resume: dict[str, float | None] | None = None  # the plugins to call again; None = all
    suspect: bool = False  # it was running when a worker died: run it alone
    busy: bool = False  # another copy of it runs now (in this worker or another): let it finish

    @property
    def number(self) -> int:
        """This attempt's number, should it fail."""
        return self.made if self.exhausted else self.made + 1


@dataclass(frozen=True)
class Slot:
    """One budget as the store sees it: at most `limit` takes of `key` in any `per` seconds."""

    key: str
    limit: int
    per: float


@dataclass(frozen=True)
class Taken:
    """A store's answer to taking several budgets at once (all or none): `blocked` is the
    index of the first budget that had no room (None: all taken) and `wait` the seconds
    until it has."""

    blocked: int | None = None
    wait: float = 0.0


@dataclass(frozen=True)
class Reserved:
    """A removal reservation's answer: granted, and how many healthy members stay in."""

    granted: bool
    remaining: int
