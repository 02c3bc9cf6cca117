"""`ctx`: what each plugin call gets besides the event — the whole plugin API.

A plugin reaches the worker only through its `Context` (docs/plugins.md lists every member):
act through the gateway, read its own config, the region and the cloud, keep files in its
own state directory, defer, save resume state, log. `Runtime` is the worker's side: the
process-wide services behind every context; no plugin sees it.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

from . import fleet
from ..cloud.gateway import Action, ActionGateway
from .fleet import Budget, Grant

if TYPE_CHECKING:
    from ..config import Config
    from ..events.event import Event

# 30 days. Up to `[worker] resend_deferrals_after` the message is hidden; longer, it is
# re-sent with DelaySeconds in hops of at most 7 days (deferred.py).
MAX_DEFER_SECONDS = 30 * 86400
MAX_STATE_BYTES = 8192  # a message is at most 64 KiB, and the original body rides along
STATE_DIR_MODE = 0o700  # a plugin's files may hold what others must not read


class Runtime:
    """Process-wide services shared by every context: config, gateway, cloud clients."""

    def __init__(self, config: Config, plugin_configs: dict[str, Any] | None = None,
                 dry_run: bool | None = None) -> None:
        self.config = config
        self.dry_run = config.worker.dry_run if dry_run is None else dry_run
        self.gateway = ActionGateway(self.dry_run)
        self.plugin_configs = plugin_configs or {}
        self.signer = None  # the fleet key's `signing.Signer`, set by `run` when configured
        self._cloud = None
        self._store = None
        self._reopen: Callable[[], Any] | None = None  # a forked child's way to its store
        self._lock = threading.Lock()

    def attach_store(self, store: Any) -> None:
        """The worker's state store (`run` opens it); plugins' budgets and state live there —
        except in dry-run, where a plan must take no real budget (a private store, below)."""
        if not self.dry_run:
            self._store = store

    @property
    def store(self) -> Any:
        """The state store; opened on first use where no command attached one (a test
        harness, `replay`). In dry-run a private one: a plan takes no real budget."""
        with self._lock:
            if self._store is None and self._reopen is not None:  # a forked child's
                self._store = self._reopen()
            if self._store is None:
                if self.dry_run:
                    import tempfile

                    from ..state.store import Store

                    self._scratch = tempfile.TemporaryDirectory(prefix="ecs-worker-dry-run-")  # removed at exit
                    self._store = Store(self._scratch.name)
                else:
                    from ..state.store_open import open_store

                    self._store = open_store(self.config)
            return self._store

    @property
    def cloud(self):
        """ECS/SLB clients, built on first use so commands that need none stay fast."""
        with self._lock:
            if self._cloud is None:
                from ..cloud import CloudClient  # lazy: the cloud SDKs are slow to import

                self._cloud = CloudClient.from_config(self.config)
            return self._cloud

    def forked(self) -> "Runtime":
        """This runtime for a forked child: same config and gateway, no inherited connections
        or locks (another thread may have held them at the fork); the same state store
        through a connection of the child's own (`forked()`), opened on first use."""
        child = copy.copy(self)
        child._cloud, child._lock = None, threading.Lock()
        if self._store is not None:
            child._store, child._reopen = None, self._store.forked
        return child

    def context(self, plugin: str, event: Event | None = None,
                deferred_since: float | None = None, resume_state: Any = None) -> Context:
        return Context(self, plugin, event, deferred_since, resume_state)


@dataclass(frozen=True)
class Deferral:
    plugin: str
    seconds: float
    reason: str


class Context:
    """One plugin's view of one event (or of start-up / shutdown when `event` is None).

    Public: `plugin`, `event`, `deferred_since`, `resume_state`, `log`, `config`, `region`,
    `dry_run`, `cloud`, `state_dir`, `act`, `act_many`, `defer`, `cancel_defer`, `skip`,
    `save_state`, and what is kept in the state store (fleet-wide when the store is shared,
    `fleet.py`): `budget`, `take`, `remember`, `recall`, `forget`, `reserve_removal`,
    `force_removals`, `release_removal`. `actions`, `deferral`, `skipped` and `saved_state` are what the
    dispatcher reads back.
    """

    def __init__(self, runtime: Runtime, plugin: str, event: Event | None = None,
                 deferred_since: float | None = None, resume_state: Any = None) -> None:
        self._runtime = runtime
        self.plugin = plugin
        self.event = event
        self.deferred_since = deferred_since
        self.resume_state = resume_state  # what this plugin saved for this event last time, or None
        self.saved_state: Any = None
        self.actions: list[Action] = []
        self.deferral: Deferral | None = None
        self.skipped: str | None = None  # why this plugin ignored the event (`skip`)
        extra = {"plugin": plugin}
        if event is not None:
            extra.update(event_id=event.id, event_name=event.name, instance_id=event.instance_id)
        self.log = logging.LoggerAdapter(logging.getLogger(f"ecs_worker.plugin.{plugin}"), extra)

    @property
    def config(self) -> Any:
        """This plugin's `[plugins.<name>]` section (its `Config` dataclass, validated), and
        only its own: other plugins' sections (a webhook secret) are never reachable."""
        return self._runtime.plugin_configs.get(self.plugin, {})

    @property
    def dry_run(self) -> bool:
        return self._runtime.dry_run

    @property
    def cloud(self):
        """The cloud clients for reads: `ecs(action, **params)`, `slb(...)`, `alb(...)`,
        `nlb(...)`, `call(api, action, params)`. Changes go through `act` / `act_many`."""
        return self._runtime.cloud

    @property
    def region(self) -> str:
        """The region this worker serves (`[cloud] region`)."""
        return self._runtime.config.cloud.region

    @property
    def state_dir(self) -> Path:
        """This plugin's own directory under `[worker] state_dir` (`plugins/<name>`), created
        0700 on first use: files that outlive the process (e.g. a budget). Raises `OSError`
        when it cannot be created (a read-only laptop in dry-run: keep state in memory then)."""
        plugins = Path(self._runtime.config.worker.state_dir) / "plugins"
        path = plugins / self.plugin
        path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
        for made in (plugins, path):
            os.chmod(made, STATE_DIR_MODE)  # mkdir's mode is masked by the umask
        return path

    def act(self, action: str, target: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Perform a cloud-changing call through the gateway (dry-run aware, recorded)."""
        return self._runtime.gateway.perform(self.plugin, action, target, call, *args,
                                             sink=self.actions, **kwargs)

    def act_many(self, action: str, targets: list[Union[str, tuple["Context", str]]],
                 call: Callable[..., Any], *args: Any, note: str = "", **kwargs: Any) -> Any:
        """One cloud-changing call acting on several targets (e.g. an instance's two ports
        in one group): like `act`, each target recorded; `note` details a dry-run plan.

        A target may be a `(ctx, target)` pair: one call made for several events (a batch
        coalesced across events) records each target on its own event's context."""
        sinks = [(t[1], t[0].actions) if isinstance(t, tuple) else (t, self.actions) for t in targets]
        return self._runtime.gateway.perform_many(self.plugin, action, sinks, call, *args,
                                                  note=note, **kwargs)

    def unverified(self, exc: BaseException, source: str) -> str:
        """A read that a change depends on failed (call it in the `except`). Outside a dry run
        that is this call's failure: `exc` is raised again. In a dry run (a laptop without
        credentials, say) the plan goes on: the note to mark it with, for `plan`."""
        if not self.dry_run:
            raise exc
        return f"unverified: could not read {source}: {getattr(exc, 'code', None) or type(exc).__name__}"

    def plan(self, action: str, targets: list[Union[str, tuple["Context", str]]], note: str) -> None:
        """Record a change a dry run would make but could not check against the cloud (after
        `unverified`): planned, never made. Outside a dry run this is a bug: a change is
        made with `act` / `act_many`."""
        if not self.dry_run:
            raise RuntimeError(f"ctx.plan({action!r}) outside a dry run: make the change with ctx.act")
        self.act_many(action, targets, _never, note=note)

    def defer(self, seconds: float, reason: str = "", state: Any = None) -> None:
        """Ask for this event again in `seconds` (at most 30 days); not a failure.

        `state`, when given, is saved (see `save_state`) and is `ctx.resume_state` on return."""
        if not isinstance(seconds, (int, float)) or math.isnan(seconds) or seconds < 0:
            raise ValueError(f"defer seconds must be a non-negative number, got {seconds!r}")
        if state is not None:
            self.save_state(state)
        self.deferral = Deferral(self.plugin, min(float(seconds), MAX_DEFER_SECONDS), reason)

    def cancel_defer(self) -> None:
        """Take back an earlier `defer` of this call (e.g. a returned `Future` found nothing
        to wait for); before the call's outcome is final."""
        self.deferral = None

    def skip(self, reason: str) -> None:
        """Say why this event is not yours, and return None: `return ctx.skip("no opt-in tag")`.
        The reason is in the worker's log line for the event and in `replay --json`; returning
        `None` alone says nothing. A handled result or a deferral of the same call wins."""
        self.skipped = " ".join(str(reason).split())[:300]

    def save_state(self, state: Any) -> None:
        """Keep `state` with this event's message for this plugin's next call on it, after
        a deferral or a failure (`ctx.resume_state` then). JSON-ready and small (8 KiB):
        it travels with the message, so any worker can continue — never keep a secret in it.
        `None` clears it. A handled or ignored outcome ends it."""
        if state is None:
            self.saved_state = None
            return
        try:
            text = json.dumps(state, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"state must be JSON-ready: {exc}") from None
        if len(text.encode("utf-8")) > MAX_STATE_BYTES:
            raise ValueError(f"state is {len(text)} bytes of JSON, over {MAX_STATE_BYTES}")
        self.saved_state = json.loads(text)  # a copy: later changes to `state` do not leak in

    # -- kept in the state store: shared by the fleet when the store is (fleet.py) ------
    def budget(self, name: str, limit: int, per: float) -> Budget:
        """A budget of this plugin: at most `limit` takes in any `per` seconds, counted by
        every worker sharing the store. `.of(key)` counts it per key (e.g. per instance)."""
        return Budget(name, limit, per)

    def take(self, *budgets: Budget) -> Grant:
        """Take one unit of every budget named, all or none, in one atomic step. False-y
        when one has no room (`.blocked`, `.wait` seconds) or the store is unreachable
        (`.blocked == "store"`): then defer, never act. `.give_back()` if you did not act."""
        return fleet.take(self._runtime.store, self.plugin, budgets)

    def remember(self, key: str, value: Any, ttl: float) -> None:
        """Keep a small JSON-ready value (8 KiB) for `ttl` seconds (at most 31 days) where every
        worker sees it (never a secret: the store is shared). Raises `StoreError` when the
        store is unreachable."""
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)  # JSON-ready, or ValueError/TypeError
        if len(text.encode("utf-8")) > MAX_STATE_BYTES:
            raise ValueError(f"remember: value is {len(text)} bytes of JSON, over {MAX_STATE_BYTES}")
        self._runtime.store.put_state(fleet.state_key(self.plugin, key), json.loads(text), fleet.check_ttl(ttl))

    def recall(self, key: str) -> Any:
        """What `remember` kept under `key` (None: nothing, or it expired)."""
        return self._runtime.store.get_state(fleet.state_key(self.plugin, key))

    def forget(self, key: str) -> None:
        self._runtime.store.delete_state(fleet.state_key(self.plugin, key))

    def reserve_removal(self, group: str, member: str, healthy: list[str]) -> bool:
        """Before taking `member` out of load-balancer `group`, whose healthy members are
        `healthy` now: True when the `[guard]` limits allow it (the reservation holds until
        `release_removal` or `[guard] hold_seconds`). False: wait (defer) and ask again — or
        the store is unreachable. A removal that must not wait: `force_removals`."""
        guard = self._runtime.config.guard
        try:
            return self._runtime.store.reserve_removal(group, member, healthy, guard.keep_healthy,
                                                       guard.max_out_share, guard.hold_seconds).granted
        except fleet.StoreError as exc:
            self.log.warning("removal of %s from %s not reserved: %s", member, group, exc)
            return False

    def force_removals(self, removals: list[tuple[str, str]]) -> None:
        """Removals that are never held back (reclaimed spot instances) but count against
        their groups until `[guard] hold_seconds` or `release_removal`: many (group, member)
        pairs in one store step."""
        try:
            self._runtime.store.force_removals(removals, self._runtime.config.guard.hold_seconds)
        except fleet.StoreError as exc:
            self.log.warning("%d forced removals not counted: %s", len(removals), exc)

    def release_removal(self, group: str, member: str) -> None:
        """`member` is back in `group` (or gone for good): its reservation ends."""
        try:
            self._runtime.store.release_removal(group, member)
        except fleet.StoreError as exc:  # it lapses after [guard] hold_seconds anyway
            self.log.warning("reservation of %s in %s not released: %s", member, group, exc)

def _never(*args: Any, **kwargs: Any) -> None:  # pragma: no cover - `plan` runs only in a dry run
    raise AssertionError("a planned change was about to be made")
