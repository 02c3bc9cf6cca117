"""One emulator's whole state: its queues, RPC services, event rules, faults, RAM policy and call
counts, behind one lock (the queues' Conditions share it). No HTTP here: server.py serves it."""
from __future__ import annotations

import threading

from . import fleet_events
from .auth import AccessKeys
from .cms import Monitor
from .cms_dry_run import DryRunEvents
from .faults import Faults, validate_faults
from .mns_errors import MnsErrorResponse
from .mns_queue import Queue
from .mns_xml import check_queue_name, parse_queue_attributes
from .ram import MNS_READINGS, Policy, validate_policy
from .rpc import RpcServices
from .schema_checks import StateError


# The RPC common parameters the core SDK adds to every request (signature, format, region):
# not the API's own request fields.
COMMON_PARAMS = frozenset({"Action", "Version", "Format", "RegionId", "AccessKeyId", "SignatureMethod",
                           "SignatureVersion", "SignatureNonce", "SignatureType", "Timestamp", "Signature",
                           "SecurityToken"})
KEEP_ANSWERS = 5


class World:
    """Everything the emulator knows, behind one lock (queues' Conditions share it)."""

    def __init__(self, state: dict):
        self.lock = threading.Lock()
        self.region = state["region"]
        self.account_id = state["account_id"]
        self.access_keys = AccessKeys(state["credentials"])
        self.queues = {q["name"]: Queue(q, self.lock) for q in state["queues"]}
        self.cloud = RpcServices(state)
        self.faults = Faults(state["faults"])
        self.calls: dict[str, int] = {}
        # RPC requests served since the last reset, per "product:Action": every parameter name
        # sent (with its last value) and the last answers — tests check them against Alibaba's
        # own request/response models (tests/test_alibaba_models.py). Bounded: a few per action.
        self.requests: dict[str, dict] = {}
        self.long_polls = 0  # receives now waiting (faults.mns.long_poll_limit caps them)
        self.ram_policy = Policy(state["ram_policy"]) if state.get("ram_policy") else None
        self.mns_ram_reading = state.get("mns_ram_reading", "api")
        self.mns_host = f"http://{state['account_id']}.mns.{state['region']}.aliyuncs.com"
        # CloudMonitor rules, and fleet events delivered through them (fleet_events.py).
        self.monitor = Monitor(self.region, self.account_id,
                               lambda region, queue: region == self.region and queue in self.queues)
        self.cloud.actions["cms"] = self.monitor.actions
        self.bus = fleet_events.EventBus(self.monitor, self.queues)
        self.cloud.deliver = self.bus.deliver
        dry_runs = DryRunEvents(self.bus.deliver, state["dry_run_events_reach_targets"])
        self.monitor.actions["SendDryRunSystemEvent"] = dry_runs.send
        self.cloud.ess.deliver = self._to_queue  # lifecycle-hook notifications (NotificationArn: a queue)
        self.clock = fleet_events.FleetClock(self.lock, self.cloud)

    def count(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def record(self, name: str, params: dict, answer: dict | None) -> None:
        with self.lock:
            seen = self.requests.setdefault(name, {"params": {}, "answers": []})
            seen["params"].update({k: v for k, v in params.items() if k not in COMMON_PARAMS})
            if answer is not None:
                seen["answers"] = (seen["answers"] + [answer])[-KEEP_ANSWERS:]

    def snapshot(self) -> dict:
        with self.lock:
            queues = {name: q.depths() for name, q in self.queues.items()}
            return {"region": self.region, "account_id": self.account_id, **self.cloud.snapshot(),
                    "queues": queues, "calls": dict(sorted(self.calls.items())), "faults": self.faults.snapshot(),
                    "event_rules": self.monitor.snapshot(), "fleet_events": list(self.bus.published)}

    def send(self, queue: str, body: str, delay_seconds: int | None = None, priority: int | None = None) -> str:
        with self.lock:
            q = self.queues.get(queue)
            if q is None:
                raise KeyError(f"no queue {queue!r}")
            return q.send(q.check_body(body), delay_seconds, priority).id

    def _to_queue(self, queue: str, body: str) -> bool:
        q = self.queues.get(queue)  # lock held; a hook whose queue is gone: the notification is lost
        if q is not None:
            q.send(body)
        return q is not None

    def scale(self, request: dict) -> dict:
        """`POST /_emulator/scaling`: {"group_id", "scale_in": [instance ids]} or {"group_id", "scale_out": n}."""
        if not isinstance(request, dict) or not isinstance(request.get("group_id"), str):
            raise ValueError("the body must be a JSON object with a group_id")
        with self.lock:
            ess = self.cloud.ess
            if request["group_id"] not in ess.groups:
                raise ValueError(f"no scaling group {request['group_id']!r}")
            if isinstance(request.get("scale_in"), list):
                act = ess.scale_in(request["group_id"], [str(i) for i in request["scale_in"]])
            elif isinstance(request.get("scale_out"), int) and 0 < request["scale_out"] <= 100:
                act = ess.scale_out(request["group_id"], request["scale_out"])
            else:
                raise ValueError("give scale_in (a list of instance ids) or scale_out (1..100)")
            return {"scaling_activity_id": act["id"], "instances": list(act["instances"])}

    def inject_event(self, request: dict) -> dict:
        with self.lock:
            return fleet_events.inject(self.cloud, self.clock, request)

    def create_queue(self, name: str, body: bytes, location: str) -> tuple[int, bytes, tuple]:
        """MNS CreateQueue: 201 new, 204 same attributes, 409 QueueAlreadyExist otherwise
        (help/en/mns/developer-reference/createqueue). Takes the lock itself."""
        attrs = parse_queue_attributes(body)
        check_queue_name(name)
        fresh = Queue({"name": name}, self.lock)  # built unlocked: its constructor takes the lock
        fresh.apply_attributes(attrs)
        with self.lock:
            q = self.queues.get(name)
            if q is None:
                self.queues[name] = fresh
                return 201, b"", (("Location", f"{location}/queues/{name}"),)
            if q.same_attributes(attrs):  # the SDK reads Location from this answer too
                return 204, b"", (("Location", f"{location}/queues/{name}"),)
        raise MnsErrorResponse(409, "QueueAlreadyExist", f"The queue you want to create is already exist: {name}.")

    def set_faults(self, faults: dict) -> dict:
        self.faults.update(validate_faults(faults, "faults"))
        return self.faults.snapshot()

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()
            self.requests.clear()

    def set_ram_policy(self, doc: dict | None) -> None:
        """Enforce a RAM policy document from now on (None: allow everything)."""
        def fail(path: str, msg: str) -> None:
            raise StateError(f"ram_policy: {path}: {msg}")
        self.ram_policy = Policy(validate_policy(doc, fail)) if doc is not None else None

    def ram_allows(self, product: str, action: str, resource: str) -> bool:
        policy = self.ram_policy
        if product == "mns":
            action = MNS_READINGS[self.mns_ram_reading].get(action, action)
        return policy is None or policy.allows(f"{product}:{action}", resource)

    def set_mns_ram_reading(self, reading: str) -> None:
        if reading not in MNS_READINGS:
            raise StateError(f"mns_ram_reading: must be one of {', '.join(MNS_READINGS)}")
        self.mns_ram_reading = reading

    def close(self) -> None:
        with self.lock:
            for q in self.queues.values():
                q.close()
