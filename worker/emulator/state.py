"""The emulator's state file: schema validation, defaults, and the in-memory model.

Schema (JSON object; keys marked * are required, the rest have defaults):

    region*          str                   e.g. "cn-hangzhou"
    account_id*      str                   the account uid used in ARNs / HostId
    credentials*     list (non-empty) of
        access_key_id*      str            unique
        access_key_secret*  str
        security_token      str            if set, requests with this key id must carry it
                                           (MNS header `security-token`, RPC param `SecurityToken`)
    queues           list of
        name*               str            [A-Za-z][A-Za-z0-9-]{0,119}, unique
        visibility_timeout  int 1..43200   default 30
        delay_seconds       int 0..604800  default 0
        maximum_message_size int 1024..65536  default 65536
        polling_wait_seconds int 0..30     default 0 (used when a receive names no waitseconds)
        messages            list of str | {"body": str, "delay_seconds": int, "priority": 1..16}
                                           enqueued at start-up
    instances        list of
        id*                 str            unique
        status*             one of Pending, Starting, Running, Stopping, Stopped
        tags                {str: str}     default {}
        spot                bool           default false ("SpotAsPriceGo" when true)
        locks               list of str    OperationLocks reasons, e.g. ["Recycling"]
        name                str            default: the id
        zone_id             str            default: region + "-b"
        instance_type       str            default "ecs.g6.large"
        stopped_mode        KeepCharging | StopCharging | Not-applicable
        scheduled_events    list of (O&M events announced already; see system_events.py)
            event_id*       str            unique
            event_type*     str            e.g. "SystemMaintenance.Reboot"
            not_before*     str            ISO 8601, e.g. "2026-11-29T18:00:00Z"
            status          Scheduled | Executing | Inquiring | Executed | Avoided | Canceled | Failed
                                           default "Scheduled"
            avoidable       bool           default true; false: the owner's reboot leaves it Scheduled
    load_balancers   list of
        id*                 str            unique
        name                str            default: the id
        vserver_groups      list of
            id*             str            unique across load balancers
            name            str            default: the id
            backend_servers list of
                server_id*  str
                port*       int 1..65535
                weight      int 0..100     default 100
                type        "ecs" | "eni" | "eci"   default "ecs"
                health      "normal" | "abnormal" | "unavailable"   default "normal" (DescribeHealthStatus)
    alb_server_groups, nlb_server_groups   list of (ALB / NLB server groups; ids unique per product)
        id*                 str
        load_balancer_id    str            its listener (listeners.py) is on this load balancer
        listener_id         str            default "lsn-<id>"
        health_check        bool           default true; false: no verdict (`Unavailable`)
        servers             list of
            server_id*      str
            port*           int 1..65535 (NLB: 0..65535, 0 = an all-port group)
            weight          int 0..100     default 100
            type            "ecs" | "eni" | "eci" | "ip"   default "ecs"
            health          "Healthy" | "Unhealthy" | "Initial"   default "Healthy" (GetListenerHealthStatus)
    job_delay_seconds    number >= 0       how long an ALB/NLB change job runs, default 0.5
    scaling_groups, ess_detach, ess_time_scale   Auto Scaling (ESS): see ess_state.py
    faults           {api: fault}, api one of mns, ecs, slb, alb, nlb, ess; see faults.py for the keys
    ram_policy       a RAM policy document; when set, calls it does not allow are refused (ram.py)
    mns_ram_reading  "api" | "table"   which RAM action an MNS batch call needs, default "api"
                     (ram.py: Alibaba's per-API pages and its authorization table disagree)
    start_delay_seconds  number >= 0       Starting -> Running delay, default 1.0
    stop_delay_seconds   number >= 0       Stopping -> Stopped delay, default 1.0
    dry_run_events_reach_targets  bool     default false: SendDryRunSystemEvent's test events are
                                           delivered through matching rules only when true
                                           (Alibaba does not document that they are; cms_dry_run.py)

Unknown keys are errors (they are almost always typos). Errors are `StateError`s whose
text is one line naming the key path: `state.json: instances[2].status: must be one of ...`.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from .ess_state import validate_scaling
from .faults import validate_faults
from .listeners import SERVER_HEALTH
from .ram import validate_policy
from .schema_checks import SchemaChecker, StateError
from .system_events import parse_time
from .ram import MNS_READINGS

INSTANCE_STATUSES = ("Pending", "Starting", "Running", "Stopping", "Stopped")
STOPPED_MODES = ("KeepCharging", "StopCharging", "Not-applicable")
HEALTH_STATUSES = ("normal", "abnormal", "unavailable")  # CLB DescribeHealthStatus
SERVER_TYPES = ("ecs", "eni", "eci")
SERVER_GROUP_TYPES = ("ecs", "eni", "eci", "ip")
QUEUE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,119}$")
DEFAULT_STATE_PATH = Path(__file__).with_name("default_state.json")


def default_state() -> dict:
    """A fresh copy of the built-in example state."""
    return json.loads(DEFAULT_STATE_PATH.read_text(encoding="utf-8"))


def load_state_file(path: str | Path) -> dict:
    """Read, parse and validate a state file; raise StateError with one clear line."""
    path = Path(path)
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise StateError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise StateError(f"{name}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return validate(raw, source=name)


def validate(raw: Any, source: str = "state") -> dict:
    """Check `raw` against the schema above; return a normalized deep copy with defaults."""
    v = SchemaChecker(source)
    v.obj(raw, "", ("region", "account_id", "credentials"),
          ("queues", "instances", "load_balancers", "faults", "start_delay_seconds", "stop_delay_seconds",
           "alb_server_groups", "nlb_server_groups", "job_delay_seconds", "ram_policy", "mns_ram_reading",
           "dry_run_events_reach_targets", "scaling_groups", "ess_detach", "ess_time_scale"))
    raw = copy.deepcopy(raw)
    out: dict = {
        "region": v.string(raw["region"], "region"),
        "account_id": v.string(raw["account_id"], "account_id"),
        "credentials": v.items(raw["credentials"], "credentials", lambda c, p: _credential(v, c, p), non_empty=True),
        "queues": v.items(raw.get("queues", []), "queues", lambda q, p: _queue(v, q, p)),
        "instances": v.items(raw.get("instances", []), "instances", lambda i, p: _instance(v, i, p, raw["region"])),
        "load_balancers": v.items(raw.get("load_balancers", []), "load_balancers", lambda lb, p: _lb(v, lb, p)),
        "faults": validate_faults(raw.get("faults", {}), source, "faults"),
        "start_delay_seconds": v.number(raw.get("start_delay_seconds", 1.0), "start_delay_seconds", 0),
        "stop_delay_seconds": v.number(raw.get("stop_delay_seconds", 1.0), "stop_delay_seconds", 0),
    }
    for key in ("alb_server_groups", "nlb_server_groups"):
        lowest = 0 if key.startswith("nlb") else 1  # NLB: 0..65535, 0 an all-port group
        out[key] = v.items(raw.get(key, []), key, lambda g, p, lo=lowest: _server_group(v, g, p, lo))
        v.unique(out[key], key, "id")
    out.update(validate_scaling(v, raw, {i["id"] for i in out["instances"]}))  # ess_state.py
    out["job_delay_seconds"] = v.number(raw.get("job_delay_seconds", 0.5), "job_delay_seconds", 0)
    out["dry_run_events_reach_targets"] = v.boolean(raw.get("dry_run_events_reach_targets", False),
                                                    "dry_run_events_reach_targets")
    if raw.get("ram_policy") is not None:
        out["ram_policy"] = validate_policy(raw["ram_policy"], v.fail)
    out["mns_ram_reading"] = v.choice(raw.get("mns_ram_reading", "api"), "mns_ram_reading", tuple(MNS_READINGS))
    v.unique(out["credentials"], "credentials", "access_key_id")
    v.unique(out["queues"], "queues", "name")
    v.unique(out["instances"], "instances", "id")
    v.unique(out["load_balancers"], "load_balancers", "id")
    seen_groups: set = set()
    for i, lb in enumerate(out["load_balancers"]):
        for j, g in enumerate(lb["vserver_groups"]):
            if g["id"] in seen_groups:
                v.fail(f"load_balancers[{i}].vserver_groups[{j}].id", f"duplicate {g['id']!r}")
            seen_groups.add(g["id"])
    return out


def _credential(v: SchemaChecker, c: Any, p: str) -> dict:
    v.obj(c, p, ("access_key_id", "access_key_secret"), ("security_token",))
    out = {"access_key_id": v.string(c["access_key_id"], p + ".access_key_id"),
           "access_key_secret": v.string(c["access_key_secret"], p + ".access_key_secret")}
    if "security_token" in c:
        out["security_token"] = v.string(c["security_token"], p + ".security_token")
    return out


def _queue(v: SchemaChecker, q: Any, p: str) -> dict:
    v.obj(q, p, ("name",), ("visibility_timeout", "delay_seconds", "maximum_message_size",
                            "polling_wait_seconds", "messages"))
    return {
        "name": v.string(q["name"], p + ".name", QUEUE_NAME, "a letter then letters, digits or '-' (<= 120)"),
        "visibility_timeout": v.integer(q.get("visibility_timeout", 30), p + ".visibility_timeout", 1, 43200),
        "delay_seconds": v.integer(q.get("delay_seconds", 0), p + ".delay_seconds", 0, 604800),
        "maximum_message_size": v.integer(q.get("maximum_message_size", 65536), p + ".maximum_message_size",
                                          1024, 65536),
        "polling_wait_seconds": v.integer(q.get("polling_wait_seconds", 0), p + ".polling_wait_seconds", 0, 30),
        "messages": v.items(q.get("messages", []), p + ".messages", lambda m, mp: _seed_message(v, m, mp)),
    }


def _seed_message(v: SchemaChecker, m: Any, p: str) -> dict:
    if isinstance(m, str):
        m = {"body": m}
    v.obj(m, p, ("body",), ("delay_seconds", "priority"))
    return {"body": v.string(m["body"], p + ".body"),
            "delay_seconds": v.integer(m.get("delay_seconds", 0), p + ".delay_seconds", 0, 604800),
            "priority": v.integer(m.get("priority", 8), p + ".priority", 1, 16)}


def _instance(v: SchemaChecker, i: Any, p: str, region: Any) -> dict:
    v.obj(i, p, ("id", "status"), ("tags", "spot", "locks", "name", "zone_id", "instance_type", "stopped_mode",
                                   "scheduled_events"))
    tags = i.get("tags", {})
    if not isinstance(tags, dict):
        v.fail(p + ".tags", "must be an object of string keys to string values")
    for k, val in tags.items():
        if not isinstance(val, str):
            v.fail(f"{p}.tags.{k}", "must be a string")
    status = v.choice(i["status"], p + ".status", INSTANCE_STATUSES)
    return {
        "id": v.string(i["id"], p + ".id"),
        "status": status,
        "tags": dict(tags),
        "spot": v.boolean(i.get("spot", False), p + ".spot"),
        "locks": v.items(i.get("locks", []), p + ".locks", lambda s, lp: v.string(s, lp)),
        "name": v.string(i.get("name", i["id"]), p + ".name"),
        "zone_id": v.string(i.get("zone_id", f"{region}-b"), p + ".zone_id"),
        "instance_type": v.string(i.get("instance_type", "ecs.g6.large"), p + ".instance_type"),
        "stopped_mode": v.choice(i.get("stopped_mode", "KeepCharging" if status == "Stopped" else "Not-applicable"),
                                 p + ".stopped_mode", STOPPED_MODES),
        "scheduled_events": v.items(i.get("scheduled_events", []), p + ".scheduled_events",
                                    lambda e, ep: _scheduled_event(v, e, ep)),
    }


EVENT_STATUSES = ("Scheduled", "Executing", "Inquiring", "Executed", "Avoided", "Canceled", "Failed")


def _scheduled_event(v: SchemaChecker, e: Any, p: str) -> dict:
    v.obj(e, p, ("event_id", "event_type", "not_before"), ("status", "avoidable"))
    out = {"event_id": v.string(e["event_id"], p + ".event_id"),
           "event_type": v.string(e["event_type"], p + ".event_type"),
           "not_before": v.string(e["not_before"], p + ".not_before"),
           "status": v.choice(e.get("status", "Scheduled"), p + ".status", EVENT_STATUSES),
           "avoidable": e.get("avoidable", True)}
    if not isinstance(out["avoidable"], bool):
        v.fail(p + ".avoidable", "must be true or false")
    try:
        parse_time(out["not_before"])
    except ValueError:
        v.fail(p + ".not_before", "must be an ISO 8601 time, e.g. 2026-11-29T18:00:00Z")
    return out


def _lb(v: SchemaChecker, lb: Any, p: str) -> dict:
    v.obj(lb, p, ("id",), ("name", "vserver_groups"))
    return {"id": v.string(lb["id"], p + ".id"),
            "name": v.string(lb.get("name", lb["id"]), p + ".name"),
            "vserver_groups": v.items(lb.get("vserver_groups", []), p + ".vserver_groups",
                                      lambda g, gp: _group(v, g, gp))}


def _group(v: SchemaChecker, g: Any, p: str) -> dict:
    v.obj(g, p, ("id",), ("name", "backend_servers"))
    return {"id": v.string(g["id"], p + ".id"),
            "name": v.string(g.get("name", g["id"]), p + ".name"),
            "backend_servers": v.items(g.get("backend_servers", []), p + ".backend_servers",
                                       lambda s, sp: _server(v, s, sp))}


def _server(v: SchemaChecker, s: Any, p: str) -> dict:
    v.obj(s, p, ("server_id", "port"), ("weight", "type", "health"))
    return {"server_id": v.string(s["server_id"], p + ".server_id"),
            "port": v.integer(s["port"], p + ".port", 1, 65535),
            "weight": v.integer(s.get("weight", 100), p + ".weight", 0, 100),
            "type": v.choice(s.get("type", "ecs"), p + ".type", SERVER_TYPES),
            **({"health": v.choice(s["health"], p + ".health", HEALTH_STATUSES)} if "health" in s else {})}


def _server_group(v: SchemaChecker, g: Any, p: str, lowest_port: int) -> dict:
    v.obj(g, p, ("id",), ("load_balancer_id", "listener_id", "health_check", "servers"))
    out = {"id": v.string(g["id"], p + ".id"),
           "servers": v.items(g.get("servers", []), p + ".servers", lambda s, sp: _sg_server(v, s, sp, lowest_port))}
    for key in ("load_balancer_id", "listener_id"):
        if key in g:
            out[key] = v.string(g[key], f"{p}.{key}")
    if "health_check" in g:
        if not isinstance(g["health_check"], bool):
            v.fail(p + ".health_check", "must be true or false")
        out["health_check"] = g["health_check"]
    return out


def _sg_server(v: SchemaChecker, s: Any, p: str, lowest_port: int) -> dict:
    v.obj(s, p, ("server_id", "port"), ("weight", "type", "health"))
    return {"server_id": v.string(s["server_id"], p + ".server_id"),
            "port": v.integer(s["port"], p + ".port", lowest_port, 65535),
            "weight": v.integer(s.get("weight", 100), p + ".weight", 0, 100),
            "type": v.choice(s.get("type", "ecs"), p + ".type", SERVER_GROUP_TYPES),
            **({"health": v.choice(s["health"], p + ".health", SERVER_HEALTH)} if "health" in s else {})}
