"""Dispatch: hand one event to every plugin, each in its own try, and decide one outcome.

Knows nothing of queues: whoever called it turns the outcome into what happens to the
message (the consumer's settle step, `consumer/settle.py`: delete / defer / retry /
dead-letter; `replay` reports it). One plugin's crash, hang or slow cloud call never stops another:

- anything a hook raises, `BaseException` included (`SystemExit`, `KeyboardInterrupt`),
  is that plugin's failure for that event and goes no further;
- with `call_timeout` set, each plugin's calls run on its own few daemon threads
  (`lanes.py`): a call that overruns is a failure (an attempt of its event); an event
  whose call could not start — the plugin's threads all busy or stuck — is deferred
  (it waits for the plugin, never charged), without taking threads from the others; and a thread that never returns
  cannot hold up the process's exit; `on_settled` runs on one observer thread per
  plugin, so a slow observer never holds the worker's settle thread.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Any, Callable, Mapping

import pluggy

from .deadlines import Deadlines
from ..text import one_line
from .context import Context, Runtime
from ..events.wrapper import RESUME_STATE
from .outcomes import combine, DEFERRED, FAILED, IGNORED, PluginResult, Result
from .call_result import Failure as _Failure, args_for as _args, status_of as _status
from .completion import complete_after
from ..events.event import Event
from .hook_events import HOOK_OF_NAME
from .lanes import LaneStuck, PluginThreads, observe
from ..observability.probes import probe_id, received as probe_received

log = logging.getLogger("ecs_worker.dispatch")


class Dispatcher:
    """Calls the hooks of every registered plugin, isolated and time-limited."""

    def __init__(self, pm: pluggy.PluginManager, runtime: Runtime, call_timeout: float = 60.0,
                 max_calls_per_plugin: int | None = None) -> None:
        self.pm = pm
        self.runtime = runtime
        self.call_timeout = call_timeout
        if max_calls_per_plugin is None:
            max_calls_per_plugin = runtime.config.plugins.max_calls_per_plugin
        self.max_calls_per_plugin = max_calls_per_plugin
        # With a time limit, each plugin's calls run on its own lane so a hung plugin
        # costs its own threads, not the handler's or another plugin's. Without one,
        # calls run in the caller's thread: no thread hop.
        self._threads = PluginThreads(max_calls_per_plugin, call_timeout)
        self.deadlines = Deadlines()  # per-call timeouts of plugins' futures

    # -- life cycle ---------------------------------------------------------------
    def startup(self) -> None:
        """Call `on_startup`; the first failure (or overrun) raises `PluginStartupError`."""
        for impl in self.impls("on_startup"):
            name = self.pm.get_name(impl.plugin)
            outcome = self._invoke(impl, name, "on_startup", {"ctx": self.runtime.context(name)})
            if isinstance(outcome, _Failure):
                raise PluginStartupError(f"plugin {name!r} failed to start: {outcome.detail}")

    def shutdown(self) -> None:
        """Let the observers catch up, call `on_shutdown` (each within `call_timeout`),
        then let the call threads go."""
        observers = self._threads.observers()
        deadline = time.monotonic() + self.call_timeout
        for observer in observers:  # e.g. the webhook plugin flushes what on_settled queued
            observer.drain(deadline)
        for impl in self.impls("on_shutdown"):
            name = self.pm.get_name(impl.plugin)
            outcome = self._invoke(impl, name, "on_shutdown", {"ctx": self.runtime.context(name)})
            if isinstance(outcome, _Failure):
                log.error("plugin %s failed to shut down: %s", name, outcome.detail)
        self._threads.close()

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
        if probe_id(event.content) is not None:  # doctor --probe's test event: shown to no plugin
            return probe_received(event)
        started = time.monotonic()
        contexts: dict[str, Context] = {}
        results: list[PluginResult] = []
        pending: list[tuple[str, Future]] = []
        specific = HOOK_OF_NAME.get(event.name) or ("on_system_event" if event.is_system_event else None)
        for hook in ("on_event", specific):
            if hook is None:
                continue
            for impl in self.impls(hook):
                name = self.pm.get_name(impl.plugin)
                if resume is not None and name not in resume:
                    continue
                ctx = contexts.get(name) or self.context_for(name, event, resume)
                contexts[name] = ctx
                status = self.call(impl, name, hook, event, ctx)
                if isinstance(status, Future):
                    pending.append((name, status))
                else:
                    results.append(status)

        done: Future = Future()

        def settle() -> None:
            final = [self.deferred_result(ctx, r) if ctx else r for r in results for ctx in [contexts.get(r.plugin)]]
            result = combine(event, final, [a for c in contexts.values() for a in c.actions])
            result.seconds = time.monotonic() - started
            done.set_result(result)

        def finish() -> None:  # a lifecycle hook is completed after its plugins (completion.py)
            if event.lifecycle is None:
                return settle()
            complete_after(self, event, results, contexts, resume, settle, hop=bool(pending))

        if not pending:
            finish()
            return done
        remaining = [len(pending)]
        lock = threading.Lock()
        open_slots = set(range(len(pending)))

        def resolve(slot: int, outcome: PluginResult) -> None:
            with lock:
                if slot not in open_slots:  # the deadline and the future raced: the first resolves it
                    return
                open_slots.discard(slot)
                results.append(outcome)
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                finish()

        def from_future(name: str, fut: Future) -> PluginResult:
            try:  # the plugin's future: its exception may be a BaseException, or it was cancelled
                exc = fut.exception()
                return PluginResult(name, FAILED, one_line(exc)) if exc else _status(name, fut.result())
            except BaseException as exc:
                return PluginResult(name, FAILED, one_line(exc))

        for slot, (name, fut) in enumerate(pending):
            if self.call_timeout:  # a future that never resolves must not hold its message forever
                timeout = PluginResult(name, FAILED, f"pending work timed out after {self.call_timeout:g}s")
                self.deadlines.add(self.call_timeout, lambda s=slot, r=timeout: resolve(s, r))
            try:
                fut.add_done_callback(lambda f, s=slot, n=name: resolve(s, from_future(n, f)))
            except BaseException as exc:  # not a well-behaved Future after all
                resolve(slot, PluginResult(name, FAILED, one_line(exc)))
        return done

    def run_on_settled(self, event: Event | None, result: Result, wait: bool = False) -> None:
        """Run the `on_settled` observers; their failures (or overruns) change nothing.

        With `call_timeout` set, each plugin's observer calls run in order on its own
        observer thread and this returns without waiting for them (`wait=True` waits,
        each within `call_timeout`): a slow or hung observer never holds the caller
        (the worker's settle thread). Without it they run here, in turn.
        """
        for impl in self.impls("on_settled"):
            name = self.pm.get_name(impl.plugin)
            if self.call_timeout and not wait:
                observer = self._threads.observer(name)
                try:
                    observer.post(observe, {"name": name, "impl": impl, "context": self.runtime.context,
                                            "event": event, "result": result})
                except LaneStuck as exc:
                    observer.dropped(f"plugin {name} on_settled {exc}")
                continue
            kwargs = _args(impl, event=event, result=result, ctx=self.runtime.context(name, event))
            if not self.call_timeout:
                outcome = self._invoke(impl, name, "on_settled", kwargs)
                if isinstance(outcome, _Failure):
                    log.error("plugin %s failed in on_settled: %s", name, outcome.detail)
                continue
            observer = self._threads.observer(name)
            try:
                call = observer.post(impl.function, kwargs, wait=True)
            except LaneStuck as exc:
                observer.dropped(f"plugin {name} on_settled {exc}")
                continue
            outcome = self._outcome(call, "on_settled")
            if isinstance(outcome, _Failure):
                log.error("plugin %s failed in on_settled: %s", name, outcome.detail)

    def fresh(self) -> "Dispatcher":
        """A dispatcher for a forked child (`quarantine.py`): the same plugins, new threads,
        and cloud clients of its own (the parent's connections are not the child's)."""
        return Dispatcher(self.pm, self.runtime.forked(), self.call_timeout, self.max_calls_per_plugin)

    def stuck(self) -> dict[str, tuple[int, float | None]]:
        """Per plugin: (calls running past `call_timeout`, since when all its threads are stuck)."""
        return self._threads.stuck()

    # -- internals (completion.py uses the unprefixed ones) ------------------------------
    def context_for(self, name: str, event: Event, resume: Mapping[str, Any] | None) -> Context:
        """The plugin's context for this delivery, with its deferral time and resume state."""
        states = (resume or {}).get(RESUME_STATE)
        return self.runtime.context(name, event, resume.get(name) if resume else None,
                                    states.get(name) if isinstance(states, dict) else None)

    def impls(self, hook: str) -> list:
        caller = getattr(self.pm.hook, hook, None)
        if caller is None:
            return []
        # pluggy calls the list last-to-first; keep its order (tryfirst/trylast honoured).
        return [i for i in reversed(caller.get_hookimpls()) if not (i.hookwrapper or i.wrapper)]

    def _invoke(self, impl, name: str, hook: str, kwargs: dict[str, Any]) -> Any:
        """Call one hook implementation: its return value, or a `_Failure` for anything
        it raised (BaseException included), an overrun, or a plugin whose threads are
        all stuck. Never raises, except the caller's own KeyboardInterrupt while waiting."""
        if not self.call_timeout:
            try:
                return impl.function(**kwargs)
            except BaseException as exc:
                return _Failure(one_line(exc), exc)
        try:
            call = self._threads.lane(name).submit(impl.function, kwargs)
        except LaneStuck as exc:
            return _Failure(f"{hook} {exc}", None, waited=True)
        return self._outcome(call, hook)

    def _outcome(self, call: Future, hook: str) -> Any:
        """Wait (within `call_timeout`) for a call on a plugin's thread."""
        try:
            exc = call.exception(self.call_timeout)
        except FutureTimeout:
            if call.cancel():  # still queued, never started: the event waited, it did not fail
                return _Failure(f"{hook} not called: no free thread of the plugin within "
                                f"{self.call_timeout:g}s", None, waited=True)
            # running: it carries on, abandoned; it counts as this event's attempt
            return _Failure(f"{hook} timed out after {self.call_timeout:g}s", None,
                            timed_out=True)
        return _Failure(one_line(exc), exc) if exc is not None else call.result()

    def call(self, impl, name: str, hook: str, event: Event, ctx: Context, **more: Any) -> PluginResult | Future:
        value = self._invoke(impl, name, hook, _args(impl, event=event, ctx=ctx, **more))
        if isinstance(value, _Failure) and value.waited:  # the plugin is stuck: wait for it
            log.warning("plugin %s: event %s waits: %s", name, event.id, value.detail,
                        extra={"plugin": name, "event_id": event.id})
            return PluginResult(name, DEFERRED, f"waiting for plugin {name}: {value.detail}",
                                self.runtime.config.worker.retry_base_seconds)
        if isinstance(value, _Failure):
            if value.timed_out:
                log.error("plugin %s %s timed out after %ss", name, hook, self.call_timeout,
                          extra={"plugin": name, "event_id": event.id})
            else:
                log.warning("plugin %s %s failed on %s: %s", name, hook, event.id, value.detail,
                            exc_info=value.exc if log.isEnabledFor(logging.DEBUG) else None,
                            extra={"plugin": name, "event_id": event.id})
            return PluginResult(name, FAILED, value.detail)
        if isinstance(value, Future):
            log.debug("plugin %s %s on %s: pending", name, hook, event.id)
            return value
        status = _status(name, value)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("plugin %s %s on %s: %s %s", name, hook, event.id, status.status, status.detail,
                      extra={"plugin": name, "event_id": event.id})
        return status

    @staticmethod
    def deferred_result(ctx: Context, r: PluginResult) -> PluginResult:
        """The call's final word: a deferral, or the reason for ignoring (`ctx.skip`)."""
        if r.status == IGNORED and ctx.skipped and ctx.deferral is None:
            r = PluginResult(r.plugin, IGNORED, ctx.skipped)
        if r.status != FAILED and ctx.deferral is not None:
            r = PluginResult(r.plugin, DEFERRED, ctx.deferral.reason, ctx.deferral.seconds)
        if r.status in (FAILED, DEFERRED) and ctx.saved_state is not None:
            r.state = ctx.saved_state
        return r


class PluginStartupError(RuntimeError):
    pass

