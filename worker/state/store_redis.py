"""The shared state store on Redis (ApsaraDB for Redis, Tair, or any Redis 5+): the same
interface as the SQLite store (`store_api.StateStore`), shared by every worker that points
at it — dedupe, attempts, crash suspects, claims on running messages, plugin budgets and
state, and load-balancer removal reservations become fleet-wide.

Each step is one Lua script (`store_redis_lua.py`) on keys under one hash tag,
`ecs-worker:{<fleet>}:`, so it is atomic and runs on one shard of a cluster. Every key
expires. A server that cannot be reached raises `StoreError` (the callers fail safe) and
sets `problem()`, which `/healthz` shows until a ping succeeds again. The dead-letter
file stays on this host (`state_dir/dead-letter.jsonl`); its once-per-message notes are
shared.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import store_redis_lua as lua
from .dead_letter_file import record_once
from ..events.keys import safe_key
from .store import ATTEMPTS_TTL, DEAD_LETTER_NAME, MAX_KEYS, _resume_list, make_private_dir
from .store_types import Attempt, Reserved, Slot, StoreError, StoreUnavailable, Taken
from ..text import one_line

log = logging.getLogger("ecs_worker.store")
PING_EVERY = 2.0  # seconds between pings while the server is unreachable (`problem`)
SETTLE_PATIENCE = 10.0  # seconds `mark_settled_many` keeps trying (a restart, a failover)


class RedisStore:
    shared = True

    def __init__(self, client: Any, fleet: str, state_dir: str | Path, dedupe_ttl: float = 86400,
                 where: str = "redis", reconnect: Callable[[], Any] | None = None) -> None:
        self.client, self.where, self.dedupe_ttl = client, where, dedupe_ttl
        self.fleet, self._reconnect = fleet, reconnect
        self.prefix = "ecs-worker:{" + fleet + "}:"
        self.dir = Path(state_dir)
        self.dead_letter_path = self.dir / DEAD_LETTER_NAME
        make_private_dir(self.dir)
        self._scripts = {name: client.register_script(getattr(lua, name))
                         for name in ("TAKE", "SETTLED", "FAILED", "DEFERRED", "UNCLAIM", "CRASHED", "TAKE_BUDGETS",
                                      "RESERVE", "FORCE")}
        self._problem: str | None = None
        self._pinged = 0.0
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------
    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{safe_key(key)}"

    def _call(self, step: Callable[[], Any]) -> Any:
        from redis.exceptions import RedisClusterException, RedisError

        try:
            out = step()
        except (RedisError, RedisClusterException) as exc:
            why = f"state store {self.where}: {type(exc).__name__}: {one_line(exc)}"
            with self._lock:
                if self._problem is None:
                    log.error("%s; budgeted actions wait, messages are retried", why)
                self._problem = why
            raise StoreUnavailable(why) from None
        if self._problem is not None:
            self._recovered()
        return out

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._call(lambda: self._scripts[name](keys=keys, args=args))

    def _recovered(self) -> None:
        with self._lock:
            if self._problem is not None:
                log.warning("state store %s is reachable again", self.where)
                self._problem = None

    def problem(self) -> str | None:
        """Why the store cannot be used now (None: it can); pings while it could not."""
        if self._problem is not None and time.monotonic() - self._pinged >= PING_EVERY:
            self._pinged = time.monotonic()
            try:
                self._call(self.client.ping)
            except StoreError:
                pass
        return self._problem

    def server_time(self) -> float:
        seconds, micros = self._call(self.client.time)
        return seconds + micros / 1e6

    def forked(self) -> "RedisStore":
        """This store for a forked child (`quarantine.py`): a client and connection pool of
        its own — a socket shared with the parent would interleave both sides' replies —
        and fresh locks."""
        client = self._reconnect() if self._reconnect is not None else _fresh_client(self.client)
        return RedisStore(client, self.fleet, self.dir, self.dedupe_ttl, self.where, self._reconnect)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a dead connection is no failure
            pass

    # -- dedupe, attempts, suspects, claims ----------------------------------------------
    def take(self, keys: Sequence[str], max_attempts: int, owners: Sequence[str] = (),
             hold: float = 0) -> list[Attempt]:
        if not keys:
            return []
        if len(keys) > MAX_KEYS:
            return [a for i in range(0, len(keys), MAX_KEYS)
                    for a in self.take(keys[i:i + MAX_KEYS], max_attempts, owners[i:i + MAX_KEYS], hold)]
        owners = [*owners, *[""] * (len(keys) - len(owners))][:len(keys)]  # "": look up only
        rows = self._run("TAKE", [k for key in keys for k in self._trio(key)],
                         [int(hold * 1000) if any(owners) else 0, *owners])
        out = []
        for settled, made, resume, suspect, busy in rows:
            if settled:
                out.append(Attempt(settled=True))
                continue
            made = int(made)
            out.append(Attempt(made=made, exhausted=made >= max_attempts,
                               resume=_resume_list(_text(resume) or None), suspect=bool(suspect), busy=bool(busy)))
        return out

    def mark_settled_many(self, keys: Sequence[str]) -> None:
        """Remember settled keys. Patient (`SETTLE_PATIENCE`): the messages are deleted next,
        and a settled key forgotten lets a later copy run again."""
        give_up = time.monotonic() + SETTLE_PATIENCE
        for i in range(0, len(keys), MAX_KEYS):
            chunk = list(dict.fromkeys(keys[i:i + MAX_KEYS]))
            names = [k for key in chunk for k in self._trio(key)]
            while True:
                try:
                    self._run("SETTLED", names, [int(self.dedupe_ttl * 1000)])
                    break
                except StoreError:
                    if time.monotonic() >= give_up:
                        raise
                    time.sleep(0.25)

    def failed(self, key: str, plugins: Mapping[str, float | None] | None, crashed: bool = False,
               owner: str = "") -> int:
        resume = "" if plugins is None else json.dumps(dict(plugins))
        return int(self._run("FAILED", [self._key("a", key), self._key("c", key)],
                             [resume, ATTEMPTS_TTL, int(crashed), owner]))

    def deferred(self, key: str, plugins: Mapping[str, float | None], attempts: int | None = None,
                 owner: str = "") -> None:
        self._run("DEFERRED", [self._key("a", key), self._key("c", key)],
                  [json.dumps(dict(plugins)), attempts or 0, ATTEMPTS_TTL, owner])

    def unclaim(self, claims: Sequence[tuple[str, str]]) -> None:
        for i in range(0, len(claims), MAX_KEYS):
            chunk = claims[i:i + MAX_KEYS]
            self._run("UNCLAIM", [self._key("c", key) for key, _ in chunk], [owner for _, owner in chunk])

    def crashed(self, charged: Sequence[str], suspects: Sequence[str]) -> None:
        marks = {**{k: "0" for k in suspects}, **{k: "1" for k in charged}}
        if marks:
            self._run("CRASHED", [k for key in marks for k in (self._key("a", key), self._key("c", key))],
                      [ATTEMPTS_TTL, *marks.values()])

    def purge(self) -> None:
        """Nothing to do: every key expires on the server."""

    def record_dead_letter(self, record: Mapping[str, Any]) -> bool:
        return record_once(self.dead_letter_path, record, self._dead_letter_note)

    def _dead_letter_note(self, key: str, written: bool | None = None) -> bool | None:
        name = self._key("d", key)
        if written is None:
            value = self._call(lambda: self.client.get(name))
            return None if value is None else _text(value) == "1"
        self._call(lambda: self.client.set(name, "1" if written else "0", ex=ATTEMPTS_TTL))
        return written

    def _trio(self, key: str) -> tuple[str, str, str]:
        return self._key("s", key), self._key("a", key), self._key("c", key)

    # -- budgets, plugin state, reservations ---------------------------------------------
    def take_budgets(self, slots: Sequence[Slot], token: str) -> Taken:
        blocked, wait = self._run("TAKE_BUDGETS", [self._key("b", s.key) for s in slots],
                                  [token, *(v for s in slots for v in (s.limit, int(s.per * 1000)))])
        return Taken() if not blocked else Taken(int(blocked) - 1, int(wait) / 1000)

    def give_back(self, keys: Sequence[str], token: str) -> None:
        names = [self._key("b", k) for k in keys]
        self._call(lambda: self._pipeline(lambda p: [p.zrem(n, token) for n in names]))

    def put_state(self, key: str, value: Any, ttl: float) -> None:
        self._call(lambda: self.client.set(self._key("v", key), json.dumps(value), px=max(int(ttl * 1000), 1)))

    def get_state(self, key: str) -> Any:
        value = self._call(lambda: self.client.get(self._key("v", key)))
        return None if value is None else json.loads(value)

    def delete_state(self, key: str) -> None:
        self._call(lambda: self.client.delete(self._key("v", key)))

    def reserve_removal(self, group: str, holder: str, healthy: Sequence[str], keep: int,
                        max_out_share: float, ttl: float, force: bool = False) -> Reserved:
        granted, remaining = self._run("RESERVE", [self._key("r", group)],
                                       [holder, int(ttl * 1000), keep, round(max_out_share * 1000),
                                        int(force), *healthy])
        return Reserved(bool(granted), int(remaining))

    def force_removals(self, removals: Sequence[tuple[str, str]], ttl: float) -> None:
        holders: dict[str, list[str]] = {}
        for group, holder in removals:
            holders.setdefault(group, []).append(holder)
        if holders:  # one script, every group's key in KEYS: atomic, on the fleet's shard
            self._run("FORCE", [self._key("r", g) for g in holders],
                      [int(ttl * 1000), *(v for g, hs in holders.items() for v in (len(hs), *hs))])

    def release_removal(self, group: str, holder: str) -> None:
        self._call(lambda: self.client.hdel(self._key("r", group), holder))

    def _pipeline(self, fill: Callable[[Any], Any]) -> Any:
        with self.client.pipeline(transaction=True) as p:  # MULTI/EXEC: one slot, atomic
            fill(p)
            return p.execute()


def _fresh_client(client: Any) -> Any:
    """A new client like `client` (a plain `redis.Redis`), on a new connection pool."""
    pool = client.connection_pool
    return type(client)(connection_pool=type(pool)(connection_class=pool.connection_class,
                                                    max_connections=pool.max_connections,
                                                    **pool.connection_kwargs))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
