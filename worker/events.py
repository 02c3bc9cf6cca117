"""The `Event` model and `parse_event`: bytes off the queue in, one typed event out.

Knows both envelopes (CloudMonitor `name`/`content`, EventBridge CloudEvents
`type`/`data`), raw or base64-wrapped JSON. Knows nothing of MNS.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from .deferred import unwrap

MAX_BODY_BYTES = 64 * 1024  # the MNS message size limit

STATE_CHANGE = "Instance:StateChange"
PREEMPTIBLE_INTERRUPTION = "Instance:PreemptibleInstanceInterruption"


class InvalidEvent(ValueError):
    """A body that is not an ECS event; the message says what is wrong and where."""


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

    @property
    def content(self) -> Mapping[str, Any]:
        """The event's payload: CloudMonitor `content`, EventBridge `data`."""
        key = "data" if self.source_format == "eventbridge" else "content"
        return self.raw.get(key) or {}

    def summary(self) -> dict[str, Any]:
        """The fields worth a log line, JSON-ready."""
        return {"id": self.id, "name": self.name, "instance_id": self.instance_id,
                "region": self.region, "state": self.state, "action": self.action}


def parse_event(body: bytes | str) -> Event:
    """Parse one queue message body; raise `InvalidEvent` for anything that is not an event."""
    inner = unwrap(body)  # a long deferral re-sent (deferred.py): the original body inside
    if inner is not None:
        body = inner.body
    doc = _decode(body)
    if "specversion" in doc or "type" in doc and "name" not in doc:
        return _from_eventbridge(doc)
    return _from_cloudmonitor(doc)


def _decode(body: bytes | str) -> dict[str, Any]:
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    elif not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidEvent(f"body must be bytes or str, not {type(body).__name__}")
    body = bytes(body)
    if len(body) > MAX_BODY_BYTES:
        raise InvalidEvent(f"body is {len(body)} bytes, over the 64 KiB message limit")
    text = body.strip()
    if not text:
        raise InvalidEvent("body is empty")
    wrapped = not text.startswith(b"{") and not text.startswith(b"[")
    if wrapped:  # a default MNS queue delivers base64; detect rather than guess
        try:
            text = base64.b64decode(text, validate=True).strip()
        except (binascii.Error, ValueError):
            raise InvalidEvent("body is neither JSON nor base64") from None
        if not text:
            raise InvalidEvent("base64 body decodes to nothing")
    where = "base64-decoded body" if wrapped else "body"
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"{where} is not UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(decoded)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"{where} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidEvent(f"{where} is JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(f"{where} is a JSON {_json_type(doc)}, not an object")
    return doc


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
    )


def _text(doc: Mapping[str, Any], key: str, prefix: str = "", required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise InvalidEvent(f"field '{prefix}{key}' is missing")
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{prefix}{key}' must be a string, not a JSON {_json_type(value)}")
    if required and not value.strip():
        raise InvalidEvent(f"field '{prefix}{key}' is empty")
    return value


def _object(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"field '{key}' must be an object, not a JSON {_json_type(value)}")
    return value


_TIME_FORMATS = ("%Y%m%dT%H%M%S.%f%z", "%Y%m%dT%H%M%S%z")


def _time(doc: Mapping[str, Any], key: str) -> datetime | None:
    text = _text(doc, key)
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
        raise InvalidEvent(f"field '{key}' is not a timestamp: {text[:40]!r}") from None
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


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")
