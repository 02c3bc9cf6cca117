"""Dispatch: hand one event to every plugin, each in its own try, and decide one outcome.

Knows nothing of queues: sources turn the outcome into delete / defer / retry /
dead-letter. One plugin's crash, hang or slow cloud call never stops another.
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pluggy

from .actions import Action, _one_line
from .context import RESUME_STATE, Context, Runtime
from .events import PREEMPTIBLE_INTERRUPTION, STATE_CHANGE, Event

log = logging.getLogger("ecs_worker.dispatch")

HANDLED, FAILED, IGNORED, INVALID, DEFERRED = "handled", "failed", "ignored", "invalid", "deferred"
OUTCOMES = (HANDLED, FAILED, IGNORED, INVALID, DEFERRED)
_PRECEDENCE = {IGNORED: 0, HANDLED: 1, DEFERRED: 2, FAILED: 3}

SPECIFIC_HOOKS = {STATE_CHANGE: "on_state_change", PREEMPTIBLE_INTERRUPTION: "on_preemptible_interruption"}


@dataclass
class PluginResult:
    plugin: str
    status: str  # handled | ignored | failed | deferred
    detail: str = ""  # what the plugin returned, the error, or the deferral reason
    defer_seconds: float | None = None
    state: Any = None  # what the plugin saved for its next call (failed / deferred only)

    def merge(self, other: PluginResult) -> PluginResult:
        return other if _PRECEDENCE[other.status] > _PRECEDENCE[self.status] else self


@dataclass
class Result:
    """One event's outcome, every plugin's part in it, and the actions taken."""

    outcome: str
    event: Event | None = None
    error: str | None = None
    actions: list[Action] = field(default_factory=list)
    plugins: dict[str, PluginResult] = field(default_factory=dict)
    defer_seconds: float | None = None
    seconds: float = 0.0

    @property
    def retry_plugins(self) -> dict[str, float | None]:
        """Plugins to call again when the message returns, with when each deferred."""
        now = time.time()
        return {name: (now if r.status == DEFERRED else None)
                for name, r in self.plugins.items() if r.status in (FAILED, DEFERRED)}

    @property
    def resume_states(self) -> dict[str, Any]:
        """Each failed or deferred plugin's saved state (`ctx.save_state`), by plugin."""
        return {name: r.state for name, r in self.plugins.items()
                if r.status in (FAILED, DEFERRED) and r.state is not None}

    def resume(self, before: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The resume mapping for the message's return: `retry_plugins` (a plugin deferring
        again keeps its first deferral time from `before`) plus the saved states under
        `RESUME_STATE`."""
        before = before or {}
        out: dict[str, Any] = {name: (before.get(name) or since) if since is not None else None
                               for name, since in self.retry_plugins.items()}
        if self.resume_states:
            out[RESUME_STATE] = self.resume_states
        return out

    def to_json(self) -> dict[str, Any]:
        """The `replay --json` row (design.md contract)."""
        ev = self.event
        return {"id": ev.id if ev else None, "name": ev.name if ev else None,
                "instance_id": ev.instance_id if ev else None, "outcome": self.outcome,
                "actions": [{"plugin": a.plugin, "action": a.action, "target": a.target,
                             "dry_run": a.dry_run, "result": a.result, "detail": a.detail}
                            for a in self.actions],
                "error": self.error,
                # what each plugin returned (or its error / deferral reason), even with no action
                "plugins": {name: {"status": r.status, "detail": r.detail} for name, r in self.plugins.items()}}


def invalid(error: str) -> Result:
    return Result(INVALID, error=error)


def combine(event: Event, results: Iterable[PluginResult], actions: list[Action]) -> Result:
    by_plugin: dict[str, PluginResult] = {}
    for r in results:
        by_plugin[r.plugin] = by_plugin[r.plugin].merge(r) if r.plugin in by_plugin else r
    outcome = IGNORED
    for r in by_plugin.values():
        if _PRECEDENCE[r.status] > _PRECEDENCE[outcome]:
            outcome = r.status
    failed = [f"{r.plugin}: {r.detail}" for r in by_plugin.values() if r.status == FAILED]
    delays = [r.defer_seconds for r in by_plugin.values()
              if r.status == DEFERRED and r.defer_seconds is not None]
    return Result(outcome, event, "; ".join(failed) or None, actions, by_plugin,
                  min(delays) if outcome == DEFERRED and delays else None)


class Dispatcher:
    """Calls the event hooks of every registered plugin, isolated and time-limited."""

    def __init__(self, pm: pluggy.PluginManager, runtime: Runtime, call_timeout: float = 60.0,
                 max_calls: int = 64) -> None:
        self.pm = pm
        self.runtime = runtime
        self.call_timeout = call_timeout
        # Calls run on this pool so a hung plugin costs a thread, not the handler.
        self._pool = ThreadPoolExecutor(max_calls, thread_name_prefix="plugin") if call_timeout else None
        self._deadlines = Deadlines()

    # -- life cycle ---------------------------------------------------------------
    def startup(self) -> None:
        """Call `on_startup`; the first failure raises `PluginStartupError`."""
        for impl in self._impls("on_startup"):
            name = self.pm.get_name(impl.plugin)
            try:
                impl.function(self.runtime.context(name))
            except Exception as exc:
                raise PluginStartupError(f"plugin {name!r} failed to start: {_one_line(exc)}") from exc

    def shutdown(self) -> None:
        for impl in self._impls("on_shutdown"):
            name = self.pm.get_name(impl.plugin)
            try:
                impl.function(self.runtime.context(name))
            except Exception as exc:
                log.error("plugin %s failed to shut down: %s", name, _one_line(exc))
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- events -------------------------------------------------------------------
    def dispatch(self, event: Event, resume: Mapping[str, float | None] | None = None) -> Result:
        """Dispatch and wait for any asynchronous plugin work."""
        return self.start(event, resume).result()

    def start(self, event: Event, resume: Mapping[str, float | None] | None = None) -> Future:
        """Run the event's hooks; return a future of the `Result`.

        `resume` limits the call to the plugins named (a returning deferred or failed
        message) and gives each its `deferred_since`. The synchronous part runs here;
        plugins that returned futures are awaited without holding the caller.
        """
        started = time.monotonic()
        contexts: dict[str, Context] = {}
        results: list[PluginResult] = []
        pending: list[tuple[str, Future]] = []
        specific = SPECIFIC_HOOKS.get(event.name) or ("on_system_event" if event.is_system_event else None)
        for hook in ("on_event", specific):
            if hook is None:
                continue
            for impl in self._impls(hook):
                name = self.pm.get_name(impl.plugin)
                if resume is not None and name not in resume:
                    continue
                ctx = contexts.get(name)
                if ctx is None:
                    since = resume.get(name) if resume else None
                    states = (resume or {}).get(RESUME_STATE)
                    state = states.get(name) if isinstance(states, dict) else None
                    ctx = contexts[name] = self.runtime.context(name, event, since, state)
                status = self._call(impl, name, hook, event, ctx)
                if isinstance(status, Future):
                    pending.append((name, status))
                else:
                    results.append(status)

        done: Future = Future()

        def finish() -> None:
            final = [self._deferred(ctx, r) for r in results for ctx in [contexts[r.plugin]]]
            result = combine(event, final, [a for c in contexts.values() for a in c.actions])
            result.seconds = time.monotonic() - started
            done.set_result(result)

        if not pending:
            finish()
            return done
        remaining = [len(pending)]
        lock = threading.Lock()
        open_slots = set(range(len(pending)))

        def settle_one(slot: int, outcome: PluginResult) -> None:
            with lock:
                if slot not in open_slots:  # the deadline and the future raced: first wins
                    return
                open_slots.discard(slot)
                results.append(outcome)
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                finish()

        def from_future(name: str, fut: Future) -> PluginResult:
            exc = fut.exception()
            return PluginResult(name, FAILED, _one_line(exc)) if exc else _status(name, fut.result())

        for slot, (name, fut) in enumerate(pending):
            fut.add_done_callback(lambda f, s=slot, n=name: settle_one(s, from_future(n, f)))
            if self.call_timeout:  # a future that never resolves must not hold its message forever
                timeout = PluginResult(name, FAILED, f"pending work timed out after {self.call_timeout:g}s")
                self._deadlines.add(self.call_timeout, lambda s=slot, r=timeout: settle_one(s, r))
        return done

    def settled(self, event: Event | None, result: Result) -> None:
        """Tell the `on_settled` observers; their failures change nothing."""
        for impl in self._impls("on_settled"):
            name = self.pm.get_name(impl.plugin)
            try:
                impl.function(**_args(impl, event=event, result=result,
                                      ctx=self.runtime.context(name, event)))
            except Exception as exc:
                log.error("plugin %s failed in on_settled: %s", name, _one_line(exc))

    # -- internals ----------------------------------------------------------------
    def _impls(self, hook: str) -> list:
        caller = getattr(self.pm.hook, hook, None)
        if caller is None:
            return []
        # pluggy calls the list last-to-first; keep its order (tryfirst/trylast honoured).
        return [i for i in reversed(caller.get_hookimpls()) if not (i.hookwrapper or i.wrapper)]

    def _call(self, impl, name: str, hook: str, event: Event, ctx: Context) -> PluginResult | Future:
        kwargs = _args(impl, event=event, ctx=ctx)
        try:
            if self._pool is None:
                value = impl.function(**kwargs)
            else:
                value = self._pool.submit(impl.function, **kwargs).result(self.call_timeout)
        except FutureTimeout:
            log.error("plugin %s %s timed out after %ss", name, hook, self.call_timeout,
                      extra={"plugin": name, "event_id": event.id})
            return PluginResult(name, FAILED, f"{hook} timed out after {self.call_timeout:g}s")
        except Exception as exc:
            log.warning("plugin %s %s failed on %s: %s", name, hook, event.id, _one_line(exc),
                        exc_info=log.isEnabledFor(logging.DEBUG),
                        extra={"plugin": name, "event_id": event.id})
            return PluginResult(name, FAILED, _one_line(exc))
        if isinstance(value, Future):
            log.debug("plugin %s %s on %s: pending", name, hook, event.id)
            return value
        status = _status(name, value)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("plugin %s %s on %s: %s %s", name, hook, event.id, status.status, status.detail,
                      extra={"plugin": name, "event_id": event.id})
        return status

    @staticmethod
    def _deferred(ctx: Context, r: PluginResult) -> PluginResult:
        if r.status != FAILED and ctx.deferral is not None:
            r = PluginResult(r.plugin, DEFERRED, ctx.deferral.reason, ctx.deferral.seconds)
        if r.status in (FAILED, DEFERRED) and ctx.saved_state is not None:
            r.state = ctx.saved_state
        return r


def _status(name: str, value: Any) -> PluginResult:
    if value is None or value is False:
        return PluginResult(name, IGNORED)
    return PluginResult(name, HANDLED, value if isinstance(value, str) else "")


def _args(impl, **available: Any) -> dict[str, Any]:
    # pluggy lets an implementation take any subset of the spec's arguments.
    return {name: available[name] for name in impl.argnames}


class PluginStartupError(RuntimeError):
    pass


class Deadlines:
    """One thread that runs a callback when its deadline passes (cheap for thousands)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, callback: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + seconds, self._seq, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # pragma: no cover - callbacks settle results; never kill the thread
                log.exception("deadline callback failed")
