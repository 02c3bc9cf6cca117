"""The `Event` model and `parse_event`: bytes off the queue in, one typed event out.

Knows both envelopes (CloudMonitor `name`/`content`, EventBridge CloudEvents
`type`/`data`), raw or base64-wrapped JSON (decoded by `body.py`). Knows nothing of MNS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from .body import InvalidEvent, decode_body, json_type
from .wrapper import unwrap

MAX_FIELD_CHARS = 512  # ids, names, states, ARNs: far longer than any real one

STATE_CHANGE = "Instance:StateChange"
PREEMPTIBLE_INTERRUPTION = "Instance:PreemptibleInstanceInterruption"


@dataclass(frozen=True)
class Event:
    """One ECS system event, whichever envelope it came in."""

    id: str
    name: str  # e.g. "Instance:StateChange"; EventBridge's "ecs:" prefix removed
    instance_id: str | None
    region: str | None
    time: datetime | None
    level: str | None  # INFO / WARN / CRITICAL (CloudMonitor only)
    state: str | None  # Instance:StateChange: Pending, Starting, Running, Stopping, Stopped, Deleted
    action: str | None  # Instance:PreemptibleInstanceInterruption: "delete"
    source_format: str  # "cloudmonitor" | "eventbridge"
    raw: Mapping[str, Any] = field(repr=False, compare=False, hash=False)
    # O&M notifications (`Instance:<EventType>:<Status>`, e.g.
    # `Instance:SystemMaintenance.Reboot:Scheduled`); None for every other event.
    event_type: str | None = None  # e.g. "SystemMaintenance.Reboot"
    event_status: str | None = None  # Scheduled, Executing, Executed, Avoided, Canceled, Failed
    not_before: datetime | None = None  # when the platform will act (content `notBefore`)

    @property
    def content(self) -> Mapping[str, Any]:
        """The event's payload: CloudMonitor `content`, EventBridge `data`."""
        key = "data" if self.source_format == "eventbridge" else "content"
        return self.raw.get(key) or {}

    @property
    def is_system_event(self) -> bool:
        """An O&M notification: what `on_system_event` is called for."""
        return self.event_type is not None

    def summary(self) -> dict[str, Any]:
        """The fields worth a log line, JSON-ready."""
        out = {"id": self.id, "name": self.name, "instance_id": self.instance_id,
               "region": self.region, "state": self.state, "action": self.action}
        if self.event_type is not None:
            out.update(event_type=self.event_type, event_status=self.event_status,
                       not_before=self.not_before.isoformat() if self.not_before else None)
        return out


def parse_event(body: bytes | str) -> Event:
    """Parse one queue message body; raise `InvalidEvent` for anything that is not an event.

    Any input at all gives an `Event` or an `InvalidEvent` whose one-line message says
    what is wrong; nothing else escapes (a body is hostile until parsed).
    """
    try:
        inner = unwrap(body)  # a long deferral re-sent (deferred.py): the original body inside
        if inner is not None:
            body = inner.body
        doc = decode_body(body)
        if "specversion" in doc or "type" in doc and "name" not in doc:
            return _from_eventbridge(doc)
        return _from_cloudmonitor(doc)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent("body is nested too deeply") from None
    except MemoryError:
        raise InvalidEvent("body is too large to parse (out of memory)") from None
    except Exception as exc:  # a case not foreseen: still one line, still this message's own failure
        raise InvalidEvent(f"body cannot be parsed: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]}") from None


def _from_cloudmonitor(doc: dict[str, Any]) -> Event:
    name = _text(doc, "name", required=True)
    content = _object(doc, "content")
    arn = _text(doc, "resourceId")
    instance_id = (_text(content, "resourceId", "content.") or _text(content, "instanceId", "content.")
                   or _arn_instance(arn))
    return Event(
        id=_text(doc, "id") or "",
        name=name,
        instance_id=instance_id,
        region=_text(doc, "regionId") or _arn_region(arn),
        time=_time(doc, "eventTime") or _time(doc, "time"),
        level=_text(doc, "level"),
        state=_text(content, "state", "content.") if name == STATE_CHANGE else None,
        action=_text(content, "action", "content.") if name == PREEMPTIBLE_INTERRUPTION else None,
        source_format="cloudmonitor",
        raw=doc,
        **_system_event(name, content, "content."),
    )


def _from_eventbridge(doc: dict[str, Any]) -> Event:
    name = _text(doc, "type", required=True)
    name = name[4:] if name.startswith("ecs:") else name
    if not name:
        raise InvalidEvent("field 'type' names no event")
    data = _object(doc, "data")
    subject = _text(doc, "subject")
    return Event(
        id=_text(doc, "id") or "",
        name=name,
        instance_id=(_text(data, "resourceId", "data.") or _text(data, "instanceId", "data.")
                     or _arn_instance(subject)),
        region=_text(doc, "aliyunregionid") or _arn_region(subject),
        time=_time(doc, "time"),
        level=_text(data, "level", "data."),
        state=_text(data, "state", "data.") if name == STATE_CHANGE else None,
        action=_text(data, "action", "data.") if name == PREEMPTIBLE_INTERRUPTION else None,
        source_format="eventbridge",
        raw=doc,
        **_system_event(name, data, "data."),
    )


def _system_event(name: str, content: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """`event_type`, `event_status`, `not_before` of an O&M notification, else nothing.

    An O&M notification is an `Instance:` event other than the two above whose name is
    `Instance:<EventType>[:<Status>]` or whose content names an `eventType`. The content
    wins over the name; the name's parts fill what the content leaves out.
    """
    if not name.startswith("Instance:") or name in (STATE_CHANGE, PREEMPTIBLE_INTERRUPTION):
        return {}
    parts = name.split(":")
    event_type = _text(content, "eventType", prefix) or (parts[1] if len(parts) == 3 else None)
    if not event_type:
        return {}
    status = _text(content, "eventStatus", prefix) or (parts[2] if len(parts) == 3 else None)
    try:
        not_before = _time(content, "notBefore", prefix)
    except InvalidEvent:  # still an event for every other plugin; the time is just unknown
        not_before = None
    return {"event_type": event_type, "event_status": status or None, "not_before": not_before}


def _text(doc: Mapping[str, Any], key: str, prefix: str = "", required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise InvalidEvent(f"field '{prefix}{key}' is missing")
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{prefix}{key}' must be a string, not a JSON {json_type(value)}")
    if required and not value.strip():
        raise InvalidEvent(f"field '{prefix}{key}' is empty")
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidEvent(f"field '{prefix}{key}' is {len(value)} characters long, over {MAX_FIELD_CHARS}")
    bad = None if value.isprintable() else _CONTROL.search(value)  # the first test is the quick one
    if bad:  # these fields reach log lines and keys: no NULs, no forged line breaks
        raise InvalidEvent(f"field '{prefix}{key}' holds a control character (U+{ord(bad.group()):04X})")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _object(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"field '{key}' must be an object, not a JSON {json_type(value)}")
    return value


_TIME_FORMATS = ("%Y%m%dT%H%M%S.%f%z", "%Y%m%dT%H%M%S%z")


def _time(doc: Mapping[str, Any], key: str, prefix: str = "") -> datetime | None:
    text = _text(doc, key, prefix)
    if not text:
        return None
    for fmt in _TIME_FORMATS:  # CloudMonitor: 20190409T121826.922+0800
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:  # ISO 8601, with "Z" (Python 3.10's fromisoformat does not take it)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"field '{prefix}{key}' is not a timestamp: {text[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _arn_parts(arn: str | None) -> list[str]:
    # acs:ecs:<region>:<uid>:instance/<instance-id>
    return arn.split(":", 4) if arn and arn.startswith("acs:") else []


def _arn_instance(arn: str | None) -> str | None:
    parts = _arn_parts(arn)
    if len(parts) == 5 and parts[4].startswith("instance/"):
        return parts[4].split("/", 1)[1] or None
    return None


def _arn_region(arn: str | None) -> str | None:
    parts = _arn_parts(arn)
    return parts[2] or None if len(parts) >= 3 else None
