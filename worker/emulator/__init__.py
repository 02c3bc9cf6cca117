"""A local Alibaba Cloud emulator: MNS queues, ECS and SLB on one loopback port, spoken in the real
wire protocols so the unmodified `mns` and `aliyunsdkcore` SDKs work against it.

    from ecs_worker.emulator import Emulator
    with Emulator() as emu:              # the built-in example state; or Emulator(state_dict)
        account = Account(emu.mns_endpoint, emu.access_key_id, emu.access_key_secret)
        request.set_endpoint(emu.endpoint)

Modules, one service or concern each:
  MNS        mns_queue (queues, messages, error replies), mns_xml (XML codec), mns (request router)
  RPC        rpc (the services behind one `call`; `publish_event`), rpc_params (shared parameter
             readers and RpcError), ecs (instances), clb (SLB/CLB load balancers), server_groups
             (ALB/NLB), cms (CloudMonitor event rules), system_events (scheduled O&M events),
             ess / ess_activity / ess_state (Auto Scaling groups, lifecycle hooks and actions)
  events     fleet_events (envelopes delivered through the event rules; the fleet clock)
  security   auth (signatures, access keys), ram (RAM policies)
  test aids  faults (injected errors, latency, throttling)
  state      state (the state-file schema, validated), world (one emulator's state, all services)
  HTTP       server (the handler and the threading server), cli (`ecs-worker emulator`)
"""
from __future__ import annotations

import ipaddress
import json
import threading
import time
import urllib.request
from typing import Any

from .server import EmulatorServer
from .world import World
from .state import StateError, default_state, load_state_file, validate

__all__ = ["Emulator", "StateError", "default_state", "load_state_file", "validate"]


class Emulator:
    """One running emulator. `start()` binds (port 0 = a free one) and serves on a daemon thread."""

    def __init__(self, state: dict | None = None, host: str = "127.0.0.1", port: int = 0):
        self._state = validate(default_state() if state is None else state, source="state")
        self.world = World(self._state)
        self._address = (host, port)
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Emulator":
        if self._server is None:
            self._server = EmulatorServer(self._address, self.world)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="ecs-worker-emulator", daemon=True)
            self._thread.start()
            self.world.clock.start()   # fleet events: due transitions and scheduled steps
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.world.clock.stop()
        server.shutdown()              # stop accepting
        self.world.close()             # end long polls now
        server.close_connections()     # end idle keep-alive handlers
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses and credentials

    @property
    def host(self) -> str:
        return self._server.server_address[0] if self._server else self._address[0]

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """host:port, for `request.set_endpoint(...)` / `client.add_endpoint(...)`."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def mns_endpoint(self) -> str:
        """http://host:port, for `mns.account.Account(...)`."""
        return f"http://{self.endpoint}"

    @property
    def region(self) -> str:
        return self.world.region

    @property
    def account_id(self) -> str:
        return self.world.account_id

    @property
    def access_key_id(self) -> str:
        return self._state["credentials"][0]["access_key_id"]

    @property
    def access_key_secret(self) -> str:
        return self._state["credentials"][0]["access_key_secret"]

    @property
    def security_token(self) -> str | None:
        return self._state["credentials"][0].get("security_token")

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def info(self) -> dict:
        """What the CLI prints and writes to the ready file."""
        return {"endpoint": self.endpoint, "mns_endpoint": self.mns_endpoint, "region": self.region,
                "account_id": self.account_id, "access_key_id": self.access_key_id,
                "access_key_secret": self.access_key_secret, "queues": sorted(self.world.queues)}

    # ------------------------------------------------------------------ inspection and control (no HTTP)

    def state(self) -> dict:
        """Instances, load balancers, queue depths and per-action call counts (as GET /_emulator/state)."""
        return self.world.snapshot()

    def set_faults(self, faults: dict) -> dict:
        """Replace the faults of each API named (`{"ecs": {"throttle_rps": 2}}`); `{"ecs": {}}` clears."""
        return self.world.set_faults(faults)

    def reset_calls(self) -> None:
        self.world.reset_calls()

    def route_events(self, queue: str, names: tuple[str, ...] = (), rule: str | None = None) -> str:
        """As PutEventRule + PutEventRuleTargets: an enabled rule for the ECS events `names` (every
        ECS event when empty) whose MNS target is `queue`. Returns the rule's name."""
        rule = rule or f"ecs-worker-{queue}"
        params = {"RuleName": rule, "EventPattern.1.Product": "ecs",
                  **{f"EventPattern.1.NameList.{i}": n for i, n in enumerate(names, 1)}}
        with self.world.lock:
            self.world.monitor.put_event_rule(params)
            self.world.monitor.put_event_rule_targets({"RuleName": rule, "MnsParameters.1.Id": "1",
                                                       "MnsParameters.1.Region": self.region,
                                                       "MnsParameters.1.Queue": queue})
        return rule

    def inject_event(self, request: dict) -> dict:
        """As `POST /_emulator/events`: a spot interruption or a named event (see fleet_events.inject)."""
        return self.world.inject_event(request)
    def scale_in(self, group_id: str, instance_ids: list[str]) -> str:
        """Start a scale-in of these InService instances of an ESS scaling group (its SCALE_IN hooks
        open their lifecycle actions and notify their queues). Returns the scaling activity id."""
        return self.world.scale({"group_id": group_id, "scale_in": list(instance_ids)})["scaling_activity_id"]

    def scale_out(self, group_id: str, count: int) -> dict:
        """Start a scale-out of `count` new instances (as `POST /_emulator/scaling`)."""
        return self.world.scale({"group_id": group_id, "scale_out": count})

    def schedule_event(self, instance_id: str, event_type: str = "SystemMaintenance.Reboot",
                       not_before: float | None = None, event_id: str | None = None,
                       avoidable: bool = True) -> str:
        """Announce an O&M event for an instance (its `Scheduled` notification is published
        now); `not_before` in epoch seconds, default a day ahead; `avoidable=False`: the owner's
        reboot leaves it Scheduled (Alibaba: the handling failed). Returns the event id."""
        with self.world.lock:
            if instance_id not in self.world.cloud.instances:
                raise KeyError(f"no instance {instance_id!r}")
            event = self.world.cloud.system_events.schedule(
                instance_id, event_type, time.time() + 86400 if not_before is None else not_before, event_id,
                avoidable)
            return event["event_id"]

    def set_ram_policy(self, policy: dict | None) -> None:
        """Enforce a RAM policy document (as the state key `ram_policy`); None lifts it."""
        self.world.set_ram_policy(policy)

    def set_mns_ram_reading(self, reading: str) -> None:
        """Which RAM action MNS batch calls need (the state key `mns_ram_reading`: "api" or "table")."""
        self.world.set_mns_ram_reading(reading)

    def send(self, queue: str, body: str | bytes, delay_seconds: int | None = None,
             priority: int | None = None) -> str:
        """Enqueue a message body as-is (no signature, not counted in `calls`); returns its MessageId."""
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        return self.world.send(queue, body, delay_seconds, priority)

    def get(self, path: str) -> Any:
        """GET an /_emulator/ endpoint over HTTP (handy for checking the wire path itself)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        with opener.open(f"{self.mns_endpoint}{path}", timeout=10) as r:
            return json.loads(r.read())
