"""Which CloudMonitor event names each hook receives: the one table, beside the hookspecs.

Dispatch (which hook an event goes to), `setup`'s rule `NameList`, `doctor`'s rule check,
the metrics' zero-initialised series and the docs' lists (checked by tests/test_hook_events.py)
all come from `HOOK_EVENTS` and from what loaded plugins declare.

- A hook with a fixed list names its events. `on_lifecycle_hook`'s (ESS lifecycle-hook
  notifications, `LIFECYCLE_EVENTS`) reach the queue from ESS, not from CloudMonitor's rule
  (`NOT_FROM_RULE`): dispatch routes them, the rule never names them.
- `EVERY_EVENT`: the hook takes every event (`on_event`, `on_settled`): the rule delivers all ECS
  events when a loaded plugin implements one.
- `DECLARED`: the hook has no fixed list (`on_system_event`: O&M notifications, whose names
  carry the status, `Instance:SystemMaintenance.Reboot:Scheduled`); a plugin implementing it
  declares the exact names it needs in its attribute `system_events`: a list of names, the
  string `EVERY_EVENT`, or a function of the plugin's validated config returning either.
  A plugin that declares nothing gets every ECS event (never fewer than it handles).

To add a hook: one entry here (and its hookspec); everything above follows.
"""
from __future__ import annotations

from typing import Any, Iterable

from ..events.event import LIFECYCLE_EVENTS, PREEMPTIBLE_INTERRUPTION, STATE_CHANGE

EVERY_EVENT = "*"
DECLARED = "declared by the plugin (`system_events`)"
DECLARATION = "system_events"  # the plugin attribute that declares what DECLARED hooks need

HOOK_EVENTS: dict[str, tuple[str, ...] | str] = {
    "on_state_change": (STATE_CHANGE,),
    "on_preemptible_interruption": (PREEMPTIBLE_INTERRUPTION,),
    "on_system_event": DECLARED,
    "on_lifecycle_hook": tuple(LIFECYCLE_EVENTS.values()),
    "on_event": EVERY_EVENT,
    "on_settled": EVERY_EVENT,
}

# Names ESS sends to the queue itself, through the lifecycle hooks `setup` creates on the scaling
# groups ([plugins.scaling]); CloudMonitor's rule never delivers them, so it never names them.
NOT_FROM_RULE: tuple[str, ...] = tuple(LIFECYCLE_EVENTS.values())
# The rule's event names fixed by the table, in order: metrics' known names, the docs' lists.
FIXED_NAMES: tuple[str, ...] = tuple(n for names in HOOK_EVENTS.values() if isinstance(names, tuple)
                                     for n in names if n not in NOT_FROM_RULE)
# event name -> the one hook that takes it (dispatch).
HOOK_OF_NAME: dict[str, str] = {n: hook for hook, names in HOOK_EVENTS.items() if isinstance(names, tuple)
                                for n in names}


class DeclarationError(ValueError):
    """A plugin's `system_events` is not a list of event names or `EVERY_EVENT`."""


def declared(plugin: Any, config: Any) -> tuple[str, ...] | str:
    """What a plugin's `on_system_event` needs: its exact names, or EVERY_EVENT."""
    value = getattr(plugin, DECLARATION, EVERY_EVENT)
    if callable(value):
        value = value(config)
    if value == EVERY_EVENT:
        return EVERY_EVENT
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise DeclarationError(f"{DECLARATION} must be a list of event names or {EVERY_EVENT!r}, not {value!r}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name.strip() or "*" in name or name != name.strip():
            raise DeclarationError(f"{DECLARATION}: {name!r} is not an event name "
                                   "(e.g. Instance:SystemMaintenance.Reboot:Scheduled)")
    return names


def needed_names(hooks_by_plugin: Iterable[tuple[Any, Iterable[str], Any]]) -> tuple[str, ...] | str:
    """The event names a set of plugins needs, sorted, or EVERY_EVENT.

    `hooks_by_plugin`: (plugin object, its implemented hook names, its validated config)."""
    names: set[str] = set()
    for plugin, hooks, config in hooks_by_plugin:
        for hook in hooks:
            listed = HOOK_EVENTS.get(hook)
            if listed is None:  # on_startup, on_shutdown: no events
                continue
            if listed == DECLARED:
                listed = declared(plugin, config)
            if listed == EVERY_EVENT:
                return EVERY_EVENT
            names.update(n for n in listed if n not in NOT_FROM_RULE)
    return tuple(sorted(names))


def rule_needed(hooks: Iterable[str]) -> bool:
    """False when the loaded plugins' event hooks take only names the rule never carries
    (`NOT_FROM_RULE`: the `scaling` plugin alone): then `setup` writes no rule, for an empty
    `NameList` would deliver every ECS event to a worker that takes none of them."""
    event_hooks = {h for h in hooks if h in HOOK_EVENTS}
    return not event_hooks or any(HOOK_EVENTS[h] != tuple(NOT_FROM_RULE) for h in event_hooks)
