"""Verify before acting on a resumed step (issue 17): the state a message carries was recorded
by this fleet (signed, or from the store), and the cloud must still agree with it."""
from __future__ import annotations

from .facts import event_status, instance_of


def has_tag(instance: dict, require_tag: str) -> bool:
    if not require_tag.strip():
        return True
    key, sep, value = require_tag.partition("=")
    tags = {t.get("TagKey"): t.get("TagValue", "") for t in (instance.get("Tags") or {}).get("Tag") or []}
    return key in tags and (not sep or tags[key] == value)


def resumed_claim(seq, members: list) -> tuple[str, str | None]:
    """(why not to act on a resumed step, or ""; the event's status now). The state was
    recorded by this fleet (signed, or from the store); the cloud must still agree."""
    strangers = sorted({m.server_id for m in members if m.server_id != seq.iid})
    if strangers:
        return f"its memberships name {', '.join(strangers)}, not the event's instance", None
    instance = instance_of(seq.ctx, seq.iid)
    if instance is None:
        return "no such instance (released?)", None
    if not has_tag(instance, seq.cfg.require_tag):
        return f"it does not carry the opt-in tag {seq.cfg.require_tag!r}", None
    status = event_status(seq.ctx, seq.event)
    if status is None:
        return "its O&M event is not found by its id (DescribeInstanceHistoryEvents)", None
    return "", status
