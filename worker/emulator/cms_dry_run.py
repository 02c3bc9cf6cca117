"""CloudMonitor's `SendDryRunSystemEvent` (Cms 2019-01-01): "simulates a system event" to test
that it is triggered as expected (help/en/cms/developer-reference/api-senddryrunsystemevent).
`Product` and `EventName` are required, `EventContent` is optional JSON (Alibaba suggests it
carry `product`, `resourceId` and `regionId`), `GroupId` optional; the answer is
`{"Code": "200", "Success": true}` and RAM's action is `cms:SendDryRunSystemEvent`.

Whether such a test event reaches a rule's MNS target is not documented, so by default it
does not (the stricter reading: `doctor --probe` must then say "not proven"); a state with
`dry_run_events_reach_targets: true` delivers it through matching rules like any event.
Runs under the emulator's lock.
"""
from __future__ import annotations

import json
import uuid
from typing import Callable, Mapping

from .rpc_params import RpcError, require


class DryRunEvents:
    def __init__(self, deliver: Callable[[dict], list[str]], reach_targets: bool) -> None:
        self.deliver, self.reach_targets = deliver, reach_targets
        self.sent: list[dict] = []  # every test event accepted, for inspection

    def send(self, p: Mapping[str, str]) -> dict:
        product, name = require(p, "Product"), require(p, "EventName")
        content = p.get("EventContent")
        event: dict = {}
        if content:
            try:
                event = json.loads(content)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                raise RpcError(400, "ParameterInvalid", "Illegal parameters: EventContent must be a JSON object.")
        envelope = {"id": str(uuid.uuid4()).upper(), "product": product, **event, "name": name}
        self.sent.append(envelope)
        if self.reach_targets:
            self.deliver(envelope)
        return {"Code": "200", "Success": True, "Message": "success"}
