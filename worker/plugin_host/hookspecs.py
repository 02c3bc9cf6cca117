"""The plugin contract: every hook ecs-worker calls, and what it expects back.

A plugin is a module (or any object) with functions marked `@hookimpl`:

    from ecs_worker import hookimpl

    @hookimpl
    def on_state_change(event, ctx):
        if event.state == "Stopped":
            ctx.log.info("%s stopped", event.instance_id)
            return "noted"

How the worker calls event hooks (`on_event`, `on_state_change`,
`on_preemptible_interruption`, `on_system_event`, `on_lifecycle_hook`, and the
completion step `complete_lifecycle_action`):

- Every implementation runs in its own `try`: one plugin raising never stops another.
  Each call has a time limit (`[plugins] call_timeout`); overrunning counts as a failure.
  See "What a plugin can do wrong" below.
- Return `None` when the event is not yours (`return ctx.skip("why")` returns it and puts
  the reason in the event's log line); return anything else (a short string saying what
  you did reads well in logs) when you handled it. Raise to say "this failed, try
  again later": the message comes back after a backoff, up to `[worker] max_attempts`,
  then goes to the dead-letter queue. A plugin that needs the cloud to settle something
  first may also return a `concurrent.futures.Future`; the event is settled when it resolves
  (its exception, if any, is the failure), and no handler slot is held meanwhile. It too
  must resolve within `call_timeout`, or it counts as a failure.
- The event's outcome combines all plugins: `failed` if any failed, else `deferred` if any
  deferred, else `handled` if any handled, else `ignored`. Only `failed` and `deferred`
  bring the message back; on its return only the plugins that failed or deferred are
  called again.
- Hooks may run concurrently for different events (`[worker] concurrency`): keep shared
  state behind a lock. Events arrive at least once: make actions idempotent.
- `tryfirst=True` / `trylast=True` order implementations as in pytest.
- `event.raw` and `event.content` are read-only (every nested object and array too), so
  no plugin can change what the next one sees; `copy.deepcopy(event.raw)` gives a plain,
  mutable copy.

What a plugin can do wrong, and what happens (the isolation contract):

- **Raise anything**, `BaseException` included (`SystemExit`, `KeyboardInterrupt`,
  `GeneratorExit`, your own subclass): in an event hook it is that plugin's failure for
  that event (the others still run; the event's outcome is `failed`); in `on_settled`
  and `on_shutdown` it is logged and changes nothing else; in `on_startup` it stops
  the worker with exit code 2. A future ending in an exception, or cancelled, is a
  failure too. Errors are cut to one line of at most 300 characters.
- **Hang or overrun** (with `call_timeout` set, as by default): every hook runs on the
  plugin's own threads, at most `[plugins] max_calls_per_plugin` (16) at once. A call
  that overruns `call_timeout` is a failure and its thread is abandoned to finish (or
  not) on its own; once all of a plugin's threads are stuck in overrun calls, its
  further calls fail at once. Other plugins keep their own threads, and abandoned
  threads never hold up the worker's exit. A returned future that does not resolve
  within `call_timeout` is a failure too. With `call_timeout = 0` calls run in the
  worker's threads with no limit: a hang there holds a handler.
- **Take every thread of its own** and keep them (a plugin hanging on some events while
  subscribed to all): its calls then fail fast for every event, so those events fail
  and are retried, then dead-lettered after `max_attempts`, as for any broken plugin;
  events it is not called for are not affected.
- **Crash the process** (`os._exit`, a segfault, the OOM killer): nothing is lost; the
  service manager restarts the worker and the message comes back (`docs/scale-out.md`).

A plugin with state (a budget, threads, a cache) is an object of a class whose methods are
marked `@hookimpl`; it creates its state in `on_startup` and releases it in `on_shutdown`,
so every registration owns its own (the built-in `restart`, `slb`, `maintenance`, `webhook`).

`ctx` is the whole plugin API (docs/plugins.md lists every member): act through the gateway
(`ctx.act`, `ctx.act_many`: dry-run honoured, every action recorded), its own config
(`ctx.config`, validated against the plugin's `Config` dataclass), `ctx.region`, the cloud
clients for reads (`ctx.cloud`), a private state directory (`ctx.state_dir`), defer and
take a deferral back (`ctx.defer(seconds, reason, state=None)`, `ctx.cancel_defer()`), say
why an event is not yours (`ctx.skip(reason)`),
resume state (`ctx.resume_state`, `ctx.save_state`), `ctx.log` and `ctx.dry_run`; what it
keeps in the state store — fleet-wide when the store is shared: budgets (`ctx.budget`,
`ctx.take`), small values (`ctx.remember`, `ctx.recall`, `ctx.forget`) and load-balancer
removal reservations (`ctx.reserve_removal`, `ctx.force_removals`, `ctx.release_removal`). A deferral
is not a failure and not an attempt; the queue's visibility timeout is the timer, so it
survives a crash, and the step a multi-step sequence reached travels with the message.
Beyond `ctx`, a plugin imports only what the top-level `ecs_worker` package exports.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .context import Context
    from .outcomes import Result
    from ..events.event import Event

PROJECT = "ecs_worker"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def on_startup(ctx: Context) -> None:
    """Called once before the first event (in `run` and `replay`).

    Validate what the plugin needs, warm caches, start helper threads (like every hook,
    it runs on a thread of the plugin's own, not the main thread). Raising here
    (anything, `SystemExit` included) or overrunning `call_timeout` stops the worker
    with exit code 2 and a message naming the plugin: a broken plugin should fail
    loudly at start-up, not on the first event at 3 a.m.
    """


@hookspec
def on_shutdown(ctx: Context) -> None:
    """Called once after the last event has been settled (and after the `on_settled`
    calls queued before it have run, within `call_timeout`). Flush and stop threads here.

    Exceptions (`BaseException` included) are logged and otherwise ignored; a call
    overrunning `call_timeout` is abandoned so that the worker can exit.
    """


@hookspec
def on_event(event: Event, ctx: Context) -> Any | Future | None:
    """Called for every valid event, whatever its name (unknown names included).

    Return `None` when not interested, anything else when handled; raise on failure.
    """


@hookspec
def on_state_change(event: Event, ctx: Context) -> Any | Future | None:
    """Called for `Instance:StateChange`; `event.state` is the new state
    (`Pending`/`Created`, `Starting`, `Running`, `Stopping`, `Stopped`, `Deleted`).
    """


@hookspec
def on_preemptible_interruption(event: Event, ctx: Context) -> Any | Future | None:
    """Called for `Instance:PreemptibleInstanceInterruption`: the spot instance
    `event.instance_id` will be released in about five minutes (`event.action` is
    `"delete"`). Be quick: every second counts against the notice.
    """


@hookspec
def on_system_event(event: Event, ctx: Context) -> Any | Future | None:
    """Called for O&M notifications, `Instance:<EventType>:<Status>` (e.g.
    `Instance:SystemMaintenance.Reboot:Scheduled`): `event.event_type` (e.g.
    `SystemMaintenance.Reboot`), `event.event_status` (`Scheduled`, `Executing`,
    `Executed`, `Avoided`, `Canceled`, `Failed`) and `event.not_before` (an aware
    `datetime`, or None when the notification carries none). One O&M event sends a
    notification per status, all about the same `content.eventId`
    (`event.content["eventId"]`). Scheduled events arrive days ahead: wait with
    `ctx.defer`, never by blocking.

    Which notifications reach the queue is the plugin's declaration: its attribute
    `system_events`, a list of exact names (`["Instance:SystemMaintenance.Reboot:Scheduled"]`;
    CloudMonitor matches whole names, status included), `"*"` for every ECS event, or a
    function of the plugin's validated config returning either. `ecs-worker setup` writes
    the rule from it; a plugin that declares nothing gets every ECS event.
    """


@hookspec
def on_lifecycle_hook(event: Event, ctx: Context) -> Any | Future | None:
    """Called for an Auto Scaling (ESS) lifecycle-hook notification, `LifecycleHook:SCALE_IN`
    or `LifecycleHook:SCALE_OUT`: ESS holds the instances `event.lifecycle.instance_ids` of
    scaling group `event.lifecycle.scaling_group_id` out of (or not yet in) service until
    the lifecycle action is completed or its heartbeat timeout passes.

    Do your part (drain, deregister, flush, warm up) and return when it is done; while it
    is still running, `ctx.defer` (the hook is kept open with heartbeats meanwhile, and you
    are called again — possibly before your deferral is due, as the hook's timeout needs);
    raise on failure. Never complete the action yourself: the completion step does, once
    every plugin taking the hook has answered (`complete_lifecycle_action`). The
    notification is not proof: read the action back from ESS before touching an instance
    (`DescribeLifecycleActions`, as the built-in `scaling` plugin does).
    """


@hookspec
def complete_lifecycle_action(event: Event, result: Result, ctx: Context) -> Any | Future | None:
    """The completion step of a lifecycle-hook event: called after every `on_lifecycle_hook`
    implementation called for this delivery has answered (returned futures resolved), before
    the message is settled, with their combined `result` (`result.outcome`: `handled` or
    `ignored` when all are done, `deferred` while any is still working, `failed` when any
    failed; `result.plugins` by name). It may act (`ctx.act`): complete the action, or record
    a heartbeat and `ctx.defer` to be called again with the plugins still working. Its answer
    joins the event's outcome like any hook's. On a later delivery it is called only if it
    deferred or failed (as every hook). The built-in `scaling` plugin implements it.
    """


@hookspec
def on_settled(event: Event | None, result: Result, ctx: Context) -> None:
    """Called after an event's outcome is decided, with every plugin's `result`
    (`result.outcome`, `result.actions`, `result.error`): for notifications and audits.

    `event` is `None` for a body that did not parse (`result.outcome == "invalid"`).
    Observers only: the return value is ignored, and an exception here (`BaseException`
    included) is logged but changes no outcome. With `call_timeout` set, each plugin's
    `on_settled` calls run in order on a thread of its own, shortly after the outcome
    is settled, and never hold up the worker; should one overrun `call_timeout`, that
    plugin's later notifications are dropped (logged and counted) until it returns.
    Keep it quick: hand slow work (webhooks) to a thread.
    """
