"""One entry of one load-balancer group — a CLB vserver group or an ALB/NLB server group —
as every part of `plugins/lb` and its users see it: enough to find it, remove it, and put
it back exactly. Each API's wire form is its module's (`clb.clb_wire`,
`server_groups.server_group_wire`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("clb", "alb", "nlb")


@dataclass(frozen=True)
class Membership:
    kind: str  # clb | alb | nlb
    group: str
    server_id: str
    port: int  # an instance can sit in one group on several ports
    weight: int = 100
    type: str = "ecs"

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.group)

    @property
    def target(self) -> str:
        """`rsp-…/i-…:80` for CLB; `alb:sgp-…/i-…:80` (ALB and NLB group ids look alike)."""
        where = f"{self.group}/{self.server_id}:{self.port}"
        return where if self.kind == "clb" else f"{self.kind}:{where}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Membership:
        if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
            raise ValueError(f"not a membership: {doc!r}"[:200])
        return cls(doc["kind"], str(doc["group"]), str(doc["server_id"]), int(doc["port"]),
                   int(doc.get("weight", 100)), str(doc.get("type") or "ecs"))
