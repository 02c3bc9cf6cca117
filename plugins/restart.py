"""Built-in `restart` plugin: start instances that stopped unexpectedly — safely.

Do no harm: only instances carrying the opt-in tag; wait `grace_seconds` (the queue's
visibility timeout is the timer, see `ctx.defer`) and re-read the instance before
acting; never touch an instance that is locked, being recycled, or a spot instance that
had an interruption notice; at most `max_restarts_per_hour` per instance (then a loud
error and no more tries: a crash-loop breaker) and `max_restarts_per_minute` overall.

Budgets are per worker process and kept in `[worker] state_dir/restart-budget.json`, so
a restart of the worker does not reset them. Workers sharing a queue each keep their own.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecs_worker import hookimpl
from ecs_worker.config import setting

SPOT_STRATEGIES = ("SpotAsPriceGo", "SpotWithPriceLimit")
INTERRUPTION_MEMORY_SECONDS = 24 * 3600  # a noticed spot instance stays off-limits this long
HOUR, MINUTE = 3600.0, 60.0


@dataclass(frozen=True)
class Config:
    require_tag: str = setting("ecs-worker:auto-restart=true",
                               doc='"key=value" or "key"; empty = every instance (a warning at start-up)')
    grace_seconds: float = setting(60.0, min=0, max=3600, doc="wait this long, then re-read, then act")
    max_restarts_per_hour: int = setting(3, min=1, max=100, doc="per instance; past it: error, no more tries")
    max_restarts_per_minute: int = setting(10, min=1, max=1000, doc="all instances together, this worker")


_budget: RestartBudget | None = None


@hookimpl
def on_startup(ctx):
    global _budget
    cfg: Config = ctx.config
    if not cfg.require_tag.strip():
        ctx.log.warning("restart: require_tag is empty: EVERY instance that stops will be restarted")
    ctx.cloud  # builds the gateway now, so a bad [credentials] section fails at start-up
    path = None if ctx.dry_run else Path(ctx.runtime.config.worker.state_dir) / "restart-budget.json"
    _budget = RestartBudget(path, cfg.max_restarts_per_hour, cfg.max_restarts_per_minute, ctx.log)


@hookimpl
def on_shutdown(ctx):
    global _budget
    _budget = None


@hookimpl
def on_preemptible_interruption(event, ctx):
    """Remember the notice (a spot instance about to be reclaimed is not ours to start)."""
    if event.instance_id and _budget is not None:
        _budget.note_interruption(event.instance_id)
    return None  # noting is not handling


@hookimpl
def on_state_change(event, ctx):
    if event.state != "Stopped" or not event.instance_id:
        return None
    budget = _budget
    if budget is None:
        raise RuntimeError("restart plugin is not started (on_startup was not called)")
    if not _in_our_region(event, ctx):
        return None
    cfg: Config = ctx.config
    iid = event.instance_id
    first_sight = ctx.deferred_since is None
    try:
        instance = describe_instance(ctx.cloud, iid)
        unverified = None
    except Exception as exc:
        if not ctx.dry_run:
            raise  # a failed read is a failure: the message comes back
        instance, unverified = None, f"unverified: could not read ECS: {getattr(exc, 'code', type(exc).__name__)}"

    if unverified is None:
        if instance is None:
            ctx.log.info("not restarting %s: no such instance (released?)", iid)
            return None
        if not has_tag(instance, cfg.require_tag):
            ctx.log.debug("not restarting %s: no opt-in tag %r", iid, cfg.require_tag)
            return None
    if first_sight and cfg.grace_seconds:
        # Any return from a deferral means the grace has passed: the queue is the timer.
        # (Measuring from `deferred_since` would restart the grace after every deferral,
        # e.g. one for the global budget, and could wait forever.)
        ctx.defer(max(cfg.grace_seconds, 1.0), f"grace period before restarting {iid}")
        return "waiting out the grace period"
    if unverified is not None:
        _plan_unverified(ctx, iid, unverified)
        return f"planned StartInstance ({unverified})"

    reason = skip_reason(instance, budget)
    if reason:
        ctx.log.info("not restarting %s: %s", iid, reason)
        return None
    verdict, wait = budget.reserve(iid)
    if verdict == "instance":
        ctx.log.error("not restarting %s: it was restarted %d times in the last hour "
                      "(max_restarts_per_hour); giving up until an operator looks at it",
                      iid, cfg.max_restarts_per_hour)
        return None
    if verdict == "global":
        ctx.defer(max(wait, 1.0), "max_restarts_per_minute reached")
        return "waiting for the global restart budget"
    try:
        outcome = ctx.act("StartInstance", iid, start_instance, ctx.cloud, iid)
    except Exception:
        budget.release(iid)
        raise
    if outcome == ALREADY_STARTED or ctx.dry_run:
        budget.release(iid)  # someone else started it / nothing was started
    return f"planned StartInstance {iid}" if ctx.dry_run else f"StartInstance {iid}: {outcome}"


# -- reading and deciding -------------------------------------------------------------
def describe_instance(cloud, instance_id: str) -> dict | None:
    doc = cloud.ecs("DescribeInstances", InstanceIds=[instance_id])
    found = (doc.get("Instances") or {}).get("Instance") or []
    return next((i for i in found if i.get("InstanceId") == instance_id), None)


def tags_of(instance: dict) -> dict[str, str]:
    return {t.get("TagKey"): t.get("TagValue", "") for t in (instance.get("Tags") or {}).get("Tag") or []}


def has_tag(instance: dict, require_tag: str) -> bool:
    if not require_tag.strip():
        return True
    key, sep, value = require_tag.partition("=")
    tags = tags_of(instance)
    return key in tags and (not sep or tags[key] == value)


def locks_of(instance: dict) -> list[str]:
    locks = (instance.get("OperationLocks") or {}).get("LockReason") or []
    return [lock.get("LockReason", "") for lock in locks]


def skip_reason(instance: dict, budget: RestartBudget) -> str | None:
    status = instance.get("Status")
    if status != "Stopped":
        return f"it is {status} now"
    locks = locks_of(instance)
    if locks:
        return f"it is locked ({', '.join(locks)})"
    if instance.get("SpotStrategy") in SPOT_STRATEGIES and budget.interrupted(instance["InstanceId"]):
        return "it is a spot instance that had an interruption notice"
    return None


ALREADY_STARTED = "already started by someone else"


def start_instance(cloud, instance_id: str) -> str:
    from ecs_worker.cloud import CloudError

    try:
        cloud.ecs("StartInstance", InstanceId=instance_id)
    except CloudError as exc:
        if exc.code != "IncorrectInstanceStatus":
            raise
        # ECS answers this for any state StartInstance refuses (Starting, Running, Stopping,
        # a lock): re-read rather than assume someone else started it.
        now = describe_instance(cloud, instance_id)
        status = (now or {}).get("Status")
        if status in ("Starting", "Running"):
            return ALREADY_STARTED
        locks = locks_of(now) if now else []
        raise CloudError("StartInstance", exc.code,
                         f"refused; the instance is {status or 'gone'}"
                         + (f", locked ({', '.join(locks)})" if locks else ""), exc.http_status) from None
    return "started"


def _in_our_region(event, ctx) -> bool:
    region = ctx.runtime.config.cloud.region
    if event.region and event.region != region:
        ctx.log.warning("not restarting %s: event is for region %s, this worker serves %s",
                        event.instance_id, event.region, region)
        return False
    return True


def _plan_unverified(ctx, instance_id: str, note: str) -> None:
    ctx.runtime.gateway.perform_many(ctx.plugin, "StartInstance", [(instance_id, ctx.actions)],
                                     _never, note=note)


def _never(*args: Any, **kwargs: Any) -> None:  # pragma: no cover - dry-run never calls
    raise AssertionError("dry-run must not call the cloud")


# -- budgets --------------------------------------------------------------------------
class RestartBudget:
    """Restart times per instance and interruption notices, thread-safe, saved as JSON.

    `path=None` (dry-run) keeps everything in memory. An unwritable state dir is logged
    once and then also memory-only: budgets still hold for this process's lifetime.
    """

    def __init__(self, path: Path | None, per_hour: int, per_minute: int, log, clock=time.time) -> None:
        self.path, self.per_hour, self.per_minute = path, per_hour, per_minute
        self._log, self._clock = log, clock
        self._lock = threading.Lock()
        self._restarts: dict[str, list[float]] = {}
        self._interrupted: dict[str, float] = {}
        self._load()

    def reserve(self, instance_id: str) -> tuple[str, float]:
        """("ok", 0) and count a restart; ("instance", 0) past the hourly budget; or
        ("global", seconds until a slot frees) past the per-minute cap."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            mine = self._restarts.get(instance_id, [])
            if len(mine) >= self.per_hour:
                return "instance", 0.0
            recent = sorted(t for times in self._restarts.values() for t in times if t > now - MINUTE)
            if len(recent) >= self.per_minute:
                return "global", recent[-self.per_minute] + MINUTE - now
            self._restarts.setdefault(instance_id, []).append(now)
            self._save()
            return "ok", 0.0

    def release(self, instance_id: str) -> None:
        """Undo the latest reservation: the restart did not happen (or was not ours)."""
        with self._lock:
            times = self._restarts.get(instance_id)
            if times:
                times.pop()
                self._save()

    def note_interruption(self, instance_id: str) -> None:
        with self._lock:
            self._interrupted[instance_id] = self._clock()
            self._save()

    def interrupted(self, instance_id: str) -> bool:
        with self._lock:
            seen = self._interrupted.get(instance_id)
            return seen is not None and self._clock() - seen < INTERRUPTION_MEMORY_SECONDS

    def _prune(self, now: float) -> None:
        self._restarts = {i: [t for t in ts if t > now - HOUR] for i, ts in self._restarts.items()}
        self._restarts = {i: ts for i, ts in self._restarts.items() if ts}
        self._interrupted = {i: t for i, t in self._interrupted.items()
                             if now - t < INTERRUPTION_MEMORY_SECONDS}

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            self._restarts = {str(i): [float(t) for t in ts] for i, ts in doc.get("restarts", {}).items()}
            self._interrupted = {str(i): float(t) for i, t in doc.get("interrupted", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            self._log.warning("restart: ignoring unreadable budget file %s: %s", self.path, exc)

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # private
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"restarts": self._restarts, "interrupted": self._interrupted}))
            os.replace(tmp, self.path)  # atomic: a crash leaves the old file or the new one
        except OSError as exc:
            self._log.warning("restart: cannot save budgets to %s (%s); keeping them in memory",
                              self.path, exc.strerror)
            self.path = None
