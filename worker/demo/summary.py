"""The demo's summary, from three independent witnesses: the worker's JSON log, the emulator's
state before and after, and the dead-letter file; and its rendering for people."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .story import MAINTAINED, MAINTENANCE_EVENT



def summarise(before: dict, after: dict, log_path: Path, dead_letters: Path) -> dict:
    outcomes: dict[str, str] = {}
    events: dict[str, dict] = {}
    invalid = duplicates = 0
    actions: list[dict] = []
    for line in log_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("outcome") == "duplicate":
            duplicates += 1
        elif row.get("logger") == "ecs_worker.events" and "outcome" in row:
            if row.get("event_id"):
                outcomes[row["event_id"]] = row["outcome"]  # last word wins (deferred → handled)
                words = str(row.get("message", "")).split(" -> ")[0].split()
                events[row["event_id"]] = {"name": row.get("event_name"), "instance_id": row.get("instance_id"),
                                           "state": words[3] if len(words) > 3 else None,
                                           "outcome": row["outcome"]}
            else:
                invalid += 1
        elif row.get("logger") == "ecs_worker.actions" and row.get("action"):
            actions.append({"plugin": row.get("plugin"), "action": row.get("action"),
                            "message": row.get("message")})
    by_outcome = Counter(outcomes.values())
    if invalid:
        by_outcome["invalid"] += invalid
    if duplicates:
        by_outcome["duplicate (skipped)"] += duplicates
    # The emulator's witness: only the worker starts stopped instances here, and each start is
    # published (a reboot goes Running -> Starting: not a restart).
    fleet = after.get("fleet_events", [])
    previous: dict[str, str] = {}
    restarted_ids = set()
    for e in fleet:
        if e["state"]:
            if e["state"] == "Starting" and previous.get(e["instance_id"]) == "Stopped":
                restarted_ids.add(e["instance_id"])
            previous[e["instance_id"]] = e["state"]
    restarted = sorted(restarted_ids)
    last_state = {e["instance_id"]: e["state"] for e in fleet if e["state"]}
    present = {i["id"] for i in after["instances"]}
    not_restarted = sorted(i for i, st in last_state.items() if st == "Stopped" and i in present)
    echoes = [{"instance_id": e["instance_id"], "state": e["state"], "outcome": e["outcome"]}
              for e in events.values() if e["instance_id"] in restarted and e["state"] in ("Starting", "Running")]
    removed = {}
    for lb_before, lb_after in zip(before["load_balancers"], after["load_balancers"]):
        for g_before, g_after in zip(lb_before["vserver_groups"], lb_after["vserver_groups"]):
            kept = {(s["server_id"], s["port"]) for s in g_after["backend_servers"]}
            gone = sorted({s["server_id"] for s in g_before["backend_servers"]
                           if (s["server_id"], s["port"]) not in kept})
            if gone:
                removed[g_before["id"]] = gone
    dead = [json.loads(line) for line in dead_letters.read_text().splitlines()] if dead_letters.exists() else []
    return {"events_by_outcome": dict(sorted(by_outcome.items())), "events": list(events.values()),
            "actions": actions,
            "restarted": restarted, "removed_from_groups": removed, "not_restarted": not_restarted,
            "restart_echoes": echoes,
            "fleet_events": len(fleet), "delivered_by_rule": sum(1 for e in fleet if e["queues"]),
            "dead_letters": [{"reason": d.get("reason"), "message_id": d.get("message_id"),
                              "body": str(d.get("body", ""))[:60]} for d in dead],
            "api_calls": after.get("calls", {})}


def render(s: dict) -> str:
    lines = ["", "ecs-worker demo: summary", "",
             "events by outcome: " + ", ".join(f"{k} {v}" for k, v in s["events_by_outcome"].items())]
    lines += [f"  {e['outcome']:<8} {e['name']} {e['instance_id'] or ''} {e['state'] or ''}".rstrip()
              for e in s["events"]]
    lines.append("")
    lines.append(f"fleet events published by the emulator: {s['fleet_events']}, "
                 f"delivered through the CloudMonitor rule: {s['delivered_by_rule']}")
    for inst in s["restarted"]:
        lines.append(f"restarted {inst} (opted in with ecs-worker:auto-restart=true, still stopped after the grace period)")
        seen = [f"{e['state']} ({e['outcome']})" for e in s["restart_echoes"] if e["instance_id"] == inst]
        if seen:
            lines.append(f"  then saw its own restart come back as {', '.join(seen)}: left alone")
    for inst in s["not_restarted"]:
        lines.append(f"left {inst} stopped (not opted in: an operator's stop is respected)")
    for group, instances in s["removed_from_groups"].items():
        lines.append(f"removed {', '.join(instances)} from vserver group {group}")
    for d in s["dead_letters"]:
        lines.append(f"dead-lettered message {d['message_id']}: {d['reason']} (body: {d['body']!r})")
    lines += s.get("maintenance_and_alb", [])
    slb_calls = {k: v for k, v in s["api_calls"].items() if k.startswith("slb:")}
    lines.append("SLB calls: " + ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(slb_calls.items())))
    lines.append(f"queue drained: {'yes' if s['drained'] else 'NO'}; worker exit code {s['worker_exit_code']}")
    return "\n".join(lines)


def maintenance_and_alb_lines(before: dict, after: dict, actions: list[dict]) -> list[str]:
    lines = []
    events = next((i.get("scheduled_events", []) for i in after["instances"] if i["id"] == MAINTAINED), [])
    status = next((e["status"] for e in events if e["event_id"] == MAINTENANCE_EVENT), "?")
    done = [a for a in actions if a.get("plugin") == "maintenance"]
    out = [a for a in done if str(a.get("action")).startswith("Remove")]  # one row per entry
    back = _members(before, MAINTAINED) == _members(after, MAINTAINED)
    lines.append(f"maintenance: {MAINTAINED} rebooted before its scheduled reboot (event {MAINTENANCE_EVENT} is "
                 f"now {status}); out of {len(out)} load-balancer entr(ies) meanwhile, "
                 f"{'back in every group with the same ports and weights' if back else 'NOT back as before'}")
    for kind in ("alb", "nlb"):
        for g_before, g_after in zip(before.get(f"{kind}_server_groups", []), after.get(f"{kind}_server_groups", [])):
            kept = {(x["server_id"], x["port"]) for x in g_after["servers"]}
            gone = sorted({x["server_id"] for x in g_before["servers"] if (x["server_id"], x["port"]) not in kept})
            if gone:
                lines.append(f"removed {', '.join(gone)} from {kind.upper()} server group {g_before['id']}")
    return lines


def _members(state: dict, instance_id: str) -> set:
    found = {("clb", g["id"], s["port"], s["weight"]) for lb in state["load_balancers"] for g in lb["vserver_groups"]
             for s in g["backend_servers"] if s["server_id"] == instance_id}
    for kind in ("alb", "nlb"):
        found |= {(kind, g["id"], s["port"], s["weight"]) for g in state.get(f"{kind}_server_groups", [])
                  for s in g["servers"] if s["server_id"] == instance_id}
    return found
