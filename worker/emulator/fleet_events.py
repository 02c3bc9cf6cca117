"""Fleet events: what happens to the emulator's instances reaches the queues that rules target.

As in the real service, an ECS system event is delivered to an MNS queue only through a
CloudMonitor event rule whose pattern matches it and whose target is that queue: no rule, no
delivery (help/en/cms/.../api-cms-2019-01-01-puteventruletargets). Every fleet event goes through
`RpcServices.publish_event` (rpc.py), which builds the envelope here and hands it to `EventBus.deliver`.

- `envelope()`: the CloudMonitor system-event envelope (ver, id, product, resourceId ARN, level,
  name, userId, eventTime, regionId, content), as in Alibaba's samples.
- Bodies are base64 of that JSON: Alibaba's CloudMonitor-to-MNS sample reads them through the SDK
  with base64 decoding on, so that is the stricter reading; the worker detects either.
- `FleetClock`: a daemon thread that applies due state transitions (Starting -> Running,
  Stopping -> Stopped) when they happen, not when someone next reads, so their events arrive on
  time; and runs scheduled steps (a spot interruption's Stopped and Deleted).
- `inject()`: `POST /_emulator/events` — a spot interruption (notice, then Stopped with the
  `Recycling` lock, then Deleted), or any named event for an instance.

All methods except the clock's loop run with the emulator's lock held.
"""
from __future__ import annotations

import base64
import heapq
import itertools
import json
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable

PUBLISHED_MEMORY = 1000  # recent envelopes kept for inspection
TICK_SECONDS = 0.05


def envelope(name: str, instance_id: str, content: dict, level: str, region: str, account_id: str,
             now: float | None = None) -> dict:
    t = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return {"ver": "1.0", "id": str(uuid.uuid4()).upper(), "product": "ECS",
            "resourceId": f"acs:ecs:{region}:{account_id}:instance/{instance_id}",
            "level": level, "name": name, "userId": account_id,
            "eventTime": t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}+0000",
            "regionId": region, "content": dict(content)}


class EventBus:
    """Delivers envelopes to the queues of matching rules (`Monitor.queues_for`)."""

    def __init__(self, monitor, queues: dict):
        self.monitor = monitor
        self.queues = queues  # the World's name -> mns_queue.Queue (same dict: created queues count)
        self.published: list[dict] = []  # {"name", "instance_id", "state", "queues"}
        self.count = 0

    def deliver(self, env: dict) -> list[str]:
        body = base64.b64encode(json.dumps(env, separators=(",", ":")).encode("utf-8")).decode("ascii")
        delivered = []
        for name in self.monitor.queues_for(env):
            q = self.queues.get(name)
            if q is not None:  # a target whose queue is gone: CloudMonitor drops the event
                q.send(body)
                delivered.append(name)
        self.count += 1
        content = env.get("content") or {}
        self.published.append({"name": env["name"], "instance_id": env["resourceId"].rsplit("/", 1)[-1],
                               "state": content.get("state"), "queues": delivered})
        del self.published[:-PUBLISHED_MEMORY]
        return delivered


class FleetClock:
    """Runs due transitions and scheduled steps under the emulator's lock, every TICK_SECONDS."""

    def __init__(self, lock: threading.Lock, cloud):
        self.lock, self.cloud = lock, cloud
        self._steps: list = []  # (when, seq, fn)
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, fn: Callable[[], None]) -> None:
        """Run `fn` (lock held) `seconds` from now."""
        heapq.heappush(self._steps, (time.time() + max(0.0, seconds), next(self._seq), fn))

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="emulator-fleet-clock", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def tick(self) -> None:
        now = time.time()
        while self._steps and self._steps[0][0] <= now:
            heapq.heappop(self._steps)[2]()
        self.cloud.ess.activities.tick(now)  # lifecycle waits that timed out
        if any(i["due"] is not None and i["due"][1] <= now for i in self.cloud.instances.values()):
            self.cloud.ecs.all_instances()  # settles every due instance, publishing each change

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            with self.lock:
                self.tick()


def inject(cloud, clock: FleetClock, request: dict) -> dict:
    """`POST /_emulator/events`. Raises ValueError (answered 400) for a bad request.

    {"type": "spot-interruption", "instance_id": "i-…", "notice_seconds": 2, "release_seconds": 1}
    {"type": "event", "name": "Instance:…", "instance_id": "i-…", "content": {…}, "level": "INFO"}
    """
    if not isinstance(request, dict):
        raise ValueError("the body must be a JSON object")
    kind, iid = request.get("type"), request.get("instance_id")
    if not isinstance(iid, str) or iid not in cloud.instances:
        raise ValueError(f"no instance {iid!r}")
    if kind == "event":
        name, content = request.get("name"), request.get("content", {})
        if not isinstance(name, str) or not name or not isinstance(content, dict):
            raise ValueError("an event needs a name (string) and a content (object)")
        cloud.publish_event(name, iid, content, str(request.get("level") or "INFO"))
        return {"published": [name]}
    if kind != "spot-interruption":
        raise ValueError("type must be 'spot-interruption' or 'event'")
    notice, gap = request.get("notice_seconds", 2.0), request.get("release_seconds", 1.0)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 3600 for x in (notice, gap)):
        raise ValueError("notice_seconds and release_seconds must be numbers from 0 to 3600")
    cloud.publish_event("Instance:PreemptibleInstanceInterruption", iid, {"instanceId": iid, "action": "delete"},
                        "WARN")

    def reclaim() -> None:
        inst = cloud.instances.get(iid)
        if inst is None:
            return
        inst["status"], inst["due"], inst["stopped_mode"] = "Stopped", None, "StopCharging"
        if "Recycling" not in inst["locks"]:
            inst["locks"].append("Recycling")
        cloud.ecs.state_changed(inst)

    def release() -> None:
        inst = cloud.instances.pop(iid, None)
        if inst is not None:
            inst["status"] = "Deleted"
            cloud.ecs.state_changed(inst)

    clock.after(notice, reclaim)
    clock.after(notice + gap, release)
    return {"published": ["Instance:PreemptibleInstanceInterruption"],
            "scheduled": {"Stopped": notice, "Deleted": notice + gap}}
