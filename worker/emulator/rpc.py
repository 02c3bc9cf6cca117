"""The RPC-style (POP) services of one emulator — ECS (ecs.py), SLB/CLB (clb.py), ALB and NLB server
groups (server_groups.py), Auto Scaling (ess.py), CloudMonitor (cms.py, wired in by the server) — behind one `call`, and
the one entry point for fleet events, `publish_event`.

Unknown actions answer what the POP gateway answers: 404 `InvalidAction.NotFound`.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

from .clb import SLB_VERSION, ClassicLoadBalancers
from .ecs import ECS_VERSION, EcsService
from .ess import ESS_VERSION, AutoScaling
from .fleet_events import envelope
from .rpc_params import RpcError, invalid_action
from .listeners import Listeners
from .server_groups import ALB_VERSION, NLB_VERSION, ServerGroupService

CMS_VERSION = "2019-01-01"  # CloudMonitor: its actions live in cms.py
PRODUCTS = {ECS_VERSION: "ecs", SLB_VERSION: "slb", CMS_VERSION: "cms", ALB_VERSION: "alb",
            NLB_VERSION: "nlb", ESS_VERSION: "ess"}


class RpcServices:
    """ECS, SLB, ALB and NLB of one emulator (`actions[product][action]`); `instances` is ECS's."""

    def __init__(self, state: dict):
        self.region = state["region"]
        self.account_id = state["account_id"]
        # Where fleet events go (fleet_events.EventBus.deliver); None: nowhere.
        self.deliver: Callable[[dict], object] | None = None
        created = time.time()
        # Through a lambda: whatever `publish_event` is when an event happens (tests spy on it).
        self.ecs = EcsService(state, lambda *a: self.publish_event(*a), created)
        self.instances = self.ecs.instances
        self.system_events = self.ecs.system_events
        self.clb = ClassicLoadBalancers(state, created)
        job_seconds = state.get("job_delay_seconds", 0.5)
        self.alb = ServerGroupService("alb", state.get("alb_server_groups", []), RpcError, job_seconds)
        self.nlb = ServerGroupService("nlb", state.get("nlb_server_groups", []), RpcError, job_seconds)
        Listeners(self.alb), Listeners(self.nlb)  # their listeners' health checks
        self.ess = AutoScaling(state, self.ecs, self.clb, self.alb, self.nlb)
        self.actions: dict[str, dict[str, Callable]] = {
            "ecs": self.ecs.actions, "slb": self.clb.actions, "alb": self.alb.actions, "nlb": self.nlb.actions,
            "ess": self.ess.actions}

    def lb_of_group(self, group_id: str) -> str | None:
        return self.clb.lb_of_group(group_id)

    def call(self, product: str, action: str, params: Mapping[str, str]) -> dict:
        handler = self.actions.get(product, {}).get(action)
        if handler is None:
            raise invalid_action(action)
        self.system_events.tick()
        return handler(params)

    def publish_event(self, name: str, instance_id: str, content: dict, level: str = "INFO") -> None:
        """The one entry point for fleet events: build the CloudMonitor envelope and deliver it to
        the queues of every enabled rule that matches it (fleet_events.py). Lock held."""
        if self.deliver is not None:
            self.deliver(envelope(name, instance_id, content, level, self.region, self.account_id))

    def snapshot(self) -> dict:
        self.system_events.tick()
        instances = [{"id": i["id"], "status": i["status"], "tags": dict(i["tags"]), "spot": i["spot"],
                      "locks": list(i["locks"]), "stopped_mode": i["stopped_mode"],
                      "scheduled_events": self.system_events.snapshot(i["id"])}
                     for i in self.ecs.all_instances()]
        return {"instances": instances, "load_balancers": self.clb.snapshot(),
                "alb_server_groups": self.alb.snapshot(), "nlb_server_groups": self.nlb.snapshot(),
                "ess": self.ess.snapshot()}
