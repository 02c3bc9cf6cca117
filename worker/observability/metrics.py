"""Prometheus metrics of the running worker, in one registry the HTTP listener serves.

The runner updates them. Labelled counters start at 0 for their known labels (`known_labels`),
so `increase(ecs_worker_dead_letters_total[5m]) > 0` fires on the first one rather than the
second; the process and platform collectors and `ecs_worker_build_info` come with the registry.
`last_poll_completed` (monotonic seconds, 0 before the first
poll) is for the health check: a receive loop that stopped polling is unhealthy even
though the process is alive. A loop that is not polling because every handler is busy
(back-pressure) is alive, and says so through `loop_alive()`.
"""
from __future__ import annotations

import time

import platform

from prometheus_client import (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter,
                               Gauge, Histogram, Info)

from ..cloud.gateway import Action, ActionGateway
from ..plugin_host.outcomes import FAILED, HANDLED, IGNORED, INVALID, Result
from ..trust.judge import REFUSALS

REGISTRY = CollectorRegistry()
# process_* (CPU, memory, open fds), python_info and python_gc_*: prometheus-client's own collectors.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

EVENTS = Counter("ecs_worker_events", "Events settled, by event name and outcome "
                 "(handled, failed, ignored, invalid, deferred, duplicate)",
                 ["name", "outcome"], registry=REGISTRY)
ACTIONS = Counter("ecs_worker_actions", "Cloud-changing actions, by plugin, action and result "
                  "(ok, planned, error)", ["plugin", "action", "result"], registry=REGISTRY)
PLUGIN_ERRORS = Counter("ecs_worker_plugin_errors", "Plugin calls that failed or timed out",
                        ["plugin"], registry=REGISTRY)
DEAD_LETTERS = Counter("ecs_worker_dead_letters", "Messages dead-lettered, by reason "
                       "(invalid, max_attempts; forged, unsigned, deferred_too_long: re-sent deferrals "
                       "not to be trusted)", ["reason"], registry=REGISTRY)
HANDLER_SECONDS = Histogram("ecs_worker_handler_seconds", "Time from dispatch to outcome",
                            registry=REGISTRY,
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
EVENT_LAG = Histogram("ecs_worker_event_lag_seconds", "Time from enqueue to outcome",
                      registry=REGISTRY,
                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600))
DEAD_LETTER_QUEUE_FAILURES = Counter(
    "ecs_worker_dead_letter_queue_failures", "Dead letters the dead-letter queue refused for good "
    "(kept in dead-letter.jsonl alone)", registry=REGISTRY)
RECEIVE_ERRORS = Counter("ecs_worker_receive_errors", "Failed MNS receive calls", registry=REGISTRY)
LAST_POLL = Gauge("ecs_worker_last_poll_timestamp_seconds",
                  "Unix time the last receive call completed", registry=REGISTRY)
INFLIGHT = Gauge("ecs_worker_inflight", "Messages held: being handled or awaiting plugins' work",
                 registry=REGISTRY)
PLUGIN_STUCK_CALLS = Gauge("ecs_worker_plugin_stuck_calls", "Hook calls running past [plugins] call_timeout, "
                           "by plugin (their threads are abandoned)", ["plugin"], registry=REGISTRY)
BUILD_INFO = Info("ecs_worker_build", "Version of ecs-worker and of Python", registry=REGISTRY)

# Labels known before anything happens (issue 13: counters start at 0).
KNOWN_EVENT_NAMES = ("Instance:StateChange", "Instance:PreemptibleInstanceInterruption")
OUTCOMES = ("handled", "failed", "ignored", "invalid", "deferred", "duplicate")
DEAD_LETTER_REASONS = ("invalid", "max_attempts", *REFUSALS)
KNOWN_ACTIONS = {"restart": ("StartInstance",),
                 "slb": ("RemoveVServerGroupBackendServers", "SetVServerGroupAttribute")}
ACTION_RESULTS = ("ok", "planned", "error")


def known_labels(plugins: list[str] = ()) -> None:
    """Create every known label set at 0 (and the build info); `plugins`: the loaded plugin names."""
    from ..version import __version__

    BUILD_INFO.info({"version": __version__, "python": platform.python_version()})
    for name in KNOWN_EVENT_NAMES:
        for outcome in OUTCOMES:
            EVENTS.labels(name, outcome)
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERS.labels(reason)
    for plugin in plugins:
        PLUGIN_ERRORS.labels(plugin)
        PLUGIN_STUCK_CALLS.labels(plugin)
        for action in KNOWN_ACTIONS.get(plugin, ()):
            for result in ACTION_RESULTS:
                ACTIONS.labels(plugin, action, result)

last_poll_completed = 0.0  # time.monotonic() of the last completed poll; 0 = none yet


def poll_completed() -> None:
    global last_poll_completed
    last_poll_completed = time.monotonic()
    LAST_POLL.set_to_current_time()


def loop_alive() -> None:
    """The receive loop is waiting for room, not stuck: healthy, though no poll completed."""
    global last_poll_completed
    if last_poll_completed:
        last_poll_completed = time.monotonic()


def observe_result(result: Result, enqueue_time_ms: int | None) -> None:
    """One event's outcome: its handling time, its lag from enqueue, its plugins' failures."""
    if result.outcome == INVALID:
        return
    HANDLER_SECONDS.observe(result.seconds)
    if result.outcome in (HANDLED, IGNORED) and enqueue_time_ms:
        EVENT_LAG.observe(max(0.0, time.time() - enqueue_time_ms / 1000))
    for name, part in result.plugins.items():
        if part.status == FAILED:
            PLUGIN_ERRORS.labels(name).inc()


def count_action(action: Action) -> None:
    ACTIONS.labels(action.plugin, action.action, action.result).inc()


def watch_gateway(gateway: ActionGateway) -> None:
    gateway.subscribe(count_action)


def value(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's current value (0 when absent): for tests and the status line."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0
