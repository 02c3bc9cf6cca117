"""The demo's story as data: the seeded fleet, the messages that reach the queue from elsewhere than
the emulator's rule, the worker's config, and the scheduled-maintenance / ALB part (issue 14).
Nothing here runs anything: demo.py does, demo_summary.py reads what happened."""
from __future__ import annotations

import json
import time
from pathlib import Path

QUEUE, DLQ = "ecs-events", "ecs-events-dlq"
GROUPS = ("rsp-web80", "rsp-web8080")
AUTO, MANUAL = "i-demoauto0000000001", "i-demomanual00000001"
SPOTS = ("i-demospot00000000001", "i-demospot00000000002", "i-demospot00000000003")


def fleet() -> dict:
    web = [f"i-demoweb00000000000{n}" for n in range(1, 5)]
    spot = [f"i-demospot0000000000{n}" for n in range(1, 4)]
    instances = [{"id": i, "status": "Running", "tags": {"app": "web"}} for i in web]
    instances += [{"id": i, "status": "Running", "tags": {"app": "web"}, "spot": True} for i in spot]
    instances += [
        {"id": AUTO, "status": "Running", "tags": {"app": "web", "ecs-worker:auto-restart": "true"}},
        {"id": MANUAL, "status": "Running", "tags": {"app": "web"}},
    ]
    servers = web + spot
    return {
        "region": "cn-hangzhou", "account_id": "1690000000000000",
        "credentials": [{"access_key_id": "LTAIdemoKey000001", "access_key_secret": "demo-secret-not-real"}],
        "queues": [],  # `setup` creates them
        "instances": instances,
        "load_balancers": [{"id": "lb-demo0000000001", "vserver_groups": [
            {"id": GROUPS[0], "backend_servers": [{"server_id": s, "port": 80} for s in servers]},
            {"id": GROUPS[1], "backend_servers": [{"server_id": s, "port": 8080} for s in servers]},
        ]}],
        "start_delay_seconds": 1.0,
        "stop_delay_seconds": 0.5,
    }


def burst() -> list[tuple[str, str]]:
    """(what it is, body) — messages that reach the queue from elsewhere than the emulator's rule."""
    def cloudmonitor(n: int, name: str, instance: str, content: dict) -> str:
        return json.dumps({"ver": "1.0", "id": f"demo-{n:04d}", "product": "ECS", "level": "INFO",
                           "name": name, "userId": "1690000000000000",
                           "eventTime": "20261127T121826.922+0800", "regionId": "cn-hangzhou",
                           "resourceId": f"acs:ecs:cn-hangzhou:1690000000000000:instance/{instance}",
                           "content": content})

    spot = "Instance:PreemptibleInstanceInterruption"
    eventbridge = json.dumps({
        "specversion": "1.0", "id": "demo-0007", "source": "acs.ecs", "type": f"ecs:{spot}",
        "subject": f"acs:ecs:cn-hangzhou:1690000000000000:instance/{SPOTS[2]}",
        "time": "2026-11-27T05:00:00Z", "aliyunregionid": "cn-hangzhou",
        "data": {"instanceId": SPOTS[2], "action": "delete"}})
    return [
        ("maintenance scheduled", cloudmonitor(4, "Instance:SystemMaintenance.Reboot:Scheduled",
                                               "i-demoweb000000000002",
                                               {"instanceId": "i-demoweb000000000002", "eventStatus": "Scheduled"})),
        ("spot interruption (EventBridge)", eventbridge),
        ("duplicate delivery", eventbridge),
        ("malformed message", "this is not an ECS event"),
    ]


def config_text(emulator, state_dir: Path, store: str = "", fleet: str = "") -> str:
    shared = f'store = "{store}"\nstore_fleet = "{fleet}"\n' if store else ""
    return f"""
[mns]
endpoint = "{emulator.mns_endpoint}"
queue = "{QUEUE}"
wait_seconds = 1
dead_letter_queue = "{DLQ}"
visibility_timeout = 20

[cloud]
region = "{emulator.region}"
endpoint = "{emulator.endpoint}"
protocol = "http"

[credentials]
access_key_id = "{emulator.access_key_id}"
access_key_secret = "{emulator.access_key_secret}"

[worker]
concurrency = 4
state_dir = "{state_dir}"
shutdown_timeout = 10
{shared}
[logging]
format = "json"

[plugins]
disabled = ["hello", "webhook"]

[plugins.restart]
grace_seconds = 2
"""


# -- Scheduled maintenance avoided, and a spot instance leaving an ALB group (issue 14) ----
# An opted-in web instance with a scheduled O&M
# reboot (announced already, so in the state file) leaves its CLB, ALB and NLB groups, is
# rebooted (the event becomes Avoided) and comes back exactly; the first spot instance is
# in an ALB server group too, and leaves it with the interruption notice.

MAINTAINED = "i-demoweb000000000003"
MAINTENANCE_EVENT = "e-demomaint000001"
ALB_GROUP, NLB_GROUP = "sgp-demoalb0001", "sgp-demonlb0001"
MAINTENANCE_CONFIG = """
[plugins.maintenance]
poll_seconds = 2
"""


def not_before() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2 * 86400))


def with_maintenance_and_alb(state: dict) -> dict:
    nb = not_before()
    for inst in state["instances"]:
        if inst["id"] == MAINTAINED:
            inst["tags"]["ecs-worker:maintenance"] = "auto"
            inst["scheduled_events"] = [{"event_id": MAINTENANCE_EVENT, "event_type": "SystemMaintenance.Reboot",
                                         "not_before": nb}]
    state["alb_server_groups"] = [{"id": ALB_GROUP, "load_balancer_id": "alb-demo0000000001", "servers": [
        {"server_id": MAINTAINED, "port": 8080, "weight": 50},
        {"server_id": "i-demoweb000000000004", "port": 8080},
        {"server_id": "i-demospot00000000001", "port": 8080}]}]
    # Every group keeps another member: the load-balancer guard never takes the last one out.
    state["nlb_server_groups"] = [{"id": NLB_GROUP, "load_balancer_id": "nlb-demo0000000001",
                                   "servers": [{"server_id": MAINTAINED, "port": 443},
                                               {"server_id": "i-demoweb000000000004", "port": 443}]}]
    return state


def maintenance_burst() -> list[tuple[str, str]]:
    body = json.dumps({"ver": "1.0", "id": "demo-0101", "product": "ECS", "level": "CRITICAL",
                       "name": "Instance:SystemMaintenance.Reboot:Scheduled", "userId": "1690000000000000",
                       "eventTime": "20261127T121826.922+0800", "regionId": "cn-hangzhou",
                       "resourceId": f"acs:ecs:cn-hangzhou:1690000000000000:instance/{MAINTAINED}",
                       "content": {"eventId": MAINTENANCE_EVENT, "eventType": "SystemMaintenance.Reboot",
                                   "eventStatus": "Scheduled", "notBefore": not_before(), "instanceId": MAINTAINED}})
    return [("maintenance scheduled (opted in)", body)]
