"""Notification bodies: generic JSON, DingTalk markdown, Slack text."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def json_body(event, result, host: str) -> dict[str, Any]:
    """The generic body: the `replay --json` row plus when, where and the event summary."""
    return {**result.to_json(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": host, "event": event.summary() if event is not None else None}


def render(fmt: str, payload: dict[str, Any]) -> dict[str, Any]:
    if fmt == "json":
        return payload
    title, lines = _summary(payload)
    if fmt == "dingtalk":
        text = f"### {title}\n\n" + "\n".join(f"- {line}" for line in lines)
        return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    return {"text": f"*{title}*\n" + "\n".join(f"• {line}" for line in lines)}


def _summary(p: dict[str, Any]) -> tuple[str, list[str]]:
    event = p["event"] or {}
    if not p["name"]:
        title = f"ecs-worker: invalid message ({p['outcome']})"
    else:
        title = f"{p['name']} {p['instance_id'] or '-'}: {p['outcome']}"
    lines = []
    detail = event.get("state") or event.get("action")
    if detail:
        lines.append(f"state: {detail}" if event.get("state") else f"action: {detail}")
    for key in ("region", "id"):
        if event.get(key):
            lines.append(f"{'event' if key == 'id' else key}: {event[key]}")
    for a in p["actions"]:
        lines.append(f"{a['plugin']}: {a['action']} {a['target']} -> {a['result']}"
                     f"{' (dry-run)' if a['dry_run'] else ''}")
    if p["error"]:
        lines.append(f"error: {p['error']}")
    lines.append(f"host: {p['host']}, {p['time']}")
    return title, lines
