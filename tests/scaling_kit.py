"""An Auto Scaling fleet for the scaling tests: scaling groups whose instances sit in CLB, ALB
and NLB groups (some attached to the scaling group, some not), lifecycle hooks notifying the
worker's queue, and helpers to read notifications and lifecycle actions back."""
from __future__ import annotations

import json

from ecs_worker.testing import mns_queue

REGION, ACCOUNT = "cn-hangzhou", "1690000000000000"
KEY = {"access_key_id": "LTAIscaletest01", "access_key_secret": "scale-test-secret-01"}
QUEUE = "ecs-events"
ARN = f"acs:ess:{REGION}:{ACCOUNT}:queue/{QUEUE}"


def fleet(groups: int = 2, per_group: int = 10, detach: str = "after", timeout: int = 600,
          time_scale: float = 1.0, default_result: str = "CONTINUE", visibility_timeout: int = 30) -> dict:
    """`groups` scaling groups of `per_group` instances; instance n of group g is in a CLB vserver
    group, an ALB and an NLB server group attached to its scaling group, and in one CLB group
    that is not attached (ESS never touches it)."""
    instances, clb_groups, alb, nlb, scaling = [], [], [], [], []
    for g in range(groups):
        ids = [f"i-asg{g}n{n:02d}" for n in range(per_group)]
        instances += [{"id": i, "status": "Running"} for i in ids]
        clb_groups += [{"id": f"rsp-asg{g}", "backend_servers": [{"server_id": i, "port": 80} for i in ids]},
                       {"id": f"rsp-other{g}", "backend_servers": [{"server_id": i, "port": 8080} for i in ids]}]
        alb.append({"id": f"sgp-alb{g}", "servers": [{"server_id": i, "port": 80} for i in ids]})
        nlb.append({"id": f"sgp-nlb{g}", "servers": [{"server_id": i, "port": 443} for i in ids]})
        scaling.append({"id": f"asg-{g}", "instances": ids,
                        "vserver_groups": [{"id": f"rsp-asg{g}", "port": 80}],
                        "alb_server_groups": [{"id": f"sgp-alb{g}", "port": 80}],
                        "nlb_server_groups": [{"id": f"sgp-nlb{g}", "port": 443}],
                        "lifecycle_hooks": [
                            {"name": f"drain-{g}", "id": f"ash-in{g}", "transition": "SCALE_IN",
                             "heartbeat_timeout": timeout, "default_result": default_result, "notification_arn": ARN},
                            {"name": f"launch-{g}", "id": f"ash-out{g}", "transition": "SCALE_OUT",
                             "heartbeat_timeout": timeout, "notification_arn": ARN}]})
    return {"region": REGION, "account_id": ACCOUNT, "credentials": [KEY],
            "queues": [{"name": QUEUE, "visibility_timeout": visibility_timeout}, {"name": "ecs-events-dlq"}],
            "instances": instances, "load_balancers": [{"id": "lb-web", "vserver_groups": clb_groups}],
            "alb_server_groups": alb, "nlb_server_groups": nlb, "job_delay_seconds": 0.05,
            "scaling_groups": scaling, "ess_detach": detach, "ess_time_scale": time_scale}


def notifications(emu, queue: str = QUEUE, limit: int = 100) -> list[bytes]:
    """Receive (and delete) up to `limit` message bodies now in the queue, as the worker would."""
    q = mns_queue(emu, queue)
    out = []
    while len(out) < limit:
        try:
            batch = q.batch_receive_message(16, 0)
        except Exception:  # MessageNotExist: empty
            break
        out += [m.message_body.encode() if isinstance(m.message_body, str) else m.message_body for m in batch]
        q.batch_delete_message([m.receipt_handle for m in batch])
    return out


def actions(emu) -> list[dict]:
    return emu.state()["ess"]["lifecycle_actions"]


def memberships(emu, instance_id: str) -> list[str]:
    with emu.world.lock:
        return emu.world.cloud.ess.memberships(instance_id)


def body_json(raw: bytes) -> dict:
    import base64

    text = raw.strip()
    return json.loads(text if text.startswith(b"{") else base64.b64decode(text))
