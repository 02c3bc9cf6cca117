"""parse_event: every sample envelope, both encodings, and a malformed corpus."""
import base64
import json
from datetime import timezone
from pathlib import Path

import pytest

from ecs_worker import Event, InvalidEvent, parse_event

EVENTS = Path(__file__).resolve().parent.parent / "examples" / "events"


def load(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


def test_cloudmonitor_state_change():
    ev = parse_event(load("cloudmonitor-state-stopped.json"))
    assert isinstance(ev, Event)
    assert (ev.name, ev.instance_id, ev.state, ev.region) == (
        "Instance:StateChange", "i-bp1ecr5go2kqjmpkeab1", "Stopped", "cn-hangzhou")
    assert ev.id == "2256A988-0B26-4E2B-820A-8A8B8F1F5E01"
    assert ev.source_format == "cloudmonitor" and ev.level == "INFO" and ev.action is None
    assert ev.time.utcoffset().total_seconds() == 8 * 3600
    assert (ev.time.hour, ev.time.minute, ev.time.microsecond) == (12, 18, 922000)


def test_cloudmonitor_preemptible_raw_and_base64_are_the_same_event():
    raw = parse_event(load("cloudmonitor-preemptible.json"))
    wrapped = parse_event(load("cloudmonitor-preemptible.base64.txt"))
    assert raw == wrapped
    assert raw.name == "Instance:PreemptibleInstanceInterruption"
    assert raw.instance_id == "i-bp1spot000000000001" and raw.action == "delete" and raw.state is None


def test_legacy_cloudmonitor_shape():
    ev = parse_event(load("cloudmonitor-legacy-state.json"))
    assert (ev.id, ev.instance_id, ev.state, ev.region) == ("e-0001", "i-2zeabc000000000001", "Running", "cn-beijing")
    assert ev.time.year == 2026 and ev.time.utcoffset().total_seconds() == 8 * 3600


def test_maintenance_event_is_a_valid_event_with_its_content():
    ev = parse_event(load("cloudmonitor-maintenance.json"))
    assert ev.name == "Instance:SystemMaintenance.Reboot:Scheduled"
    assert ev.instance_id == "i-bp1maint00000000001" and ev.level == "CRITICAL"
    assert ev.content["notBefore"] == "2026-11-29T18:00:00Z"


def test_eventbridge_envelope_strips_prefix_and_reads_region():
    ev = parse_event(load("eventbridge-preemptible.json"))
    assert ev.source_format == "eventbridge"
    assert ev.name == "Instance:PreemptibleInstanceInterruption"
    assert (ev.instance_id, ev.region, ev.action) == ("i-uf6spot00000000002", "cn-shanghai", "delete")
    assert ev.time.tzinfo is not None and ev.time.astimezone(timezone.utc).hour == 5
    assert ev.content == {"instanceId": "i-uf6spot00000000002", "action": "delete"}


def test_eventbridge_state_change_from_subject_arn():
    body = {"specversion": "1.0", "id": "x1", "source": "acs.ecs", "type": "ecs:Instance:StateChange",
            "subject": "acs:ecs:cn-shanghai:1:instance/i-fromarn", "time": "2026-11-27T05:00:00Z",
            "data": {"state": "Stopped"}}
    ev = parse_event(json.dumps(body))
    assert (ev.instance_id, ev.region, ev.state) == ("i-fromarn", "cn-shanghai", "Stopped")


def test_instance_id_falls_back_to_the_arn_tail():
    body = {"id": "a", "name": "Instance:StateChange", "content": {"state": "Stopped"},
            "resourceId": "acs:ecs:cn-hangzhou:1690:instance/i-tail"}
    ev = parse_event(json.dumps(body).encode())
    assert ev.instance_id == "i-tail" and ev.region == "cn-hangzhou"


def test_unknown_event_names_pass_through():
    ev = parse_event('{"name": "Disk:Stalled:Executing", "id": "d1", "content": {"instanceId": "i-d"}}')
    assert ev.name == "Disk:Stalled:Executing" and ev.instance_id == "i-d"


def test_whitespace_around_base64_and_json_is_fine():
    body = base64.b64encode(load("cloudmonitor-state-stopped.json")).decode()
    assert parse_event(f"\n  {body}\n").state == "Stopped"
    assert parse_event(b"  \n" + load("cloudmonitor-state-stopped.json") + b"\n").state == "Stopped"


def test_event_is_frozen():
    ev = parse_event(load("cloudmonitor-state-stopped.json"))
    with pytest.raises(AttributeError):
        ev.state = "Running"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


MALFORMED = {
    "empty": (b"", "empty"),
    "whitespace only": (b"  \n\t ", "empty"),
    "not JSON, not base64": (b"hello world!", "neither JSON nor base64"),
    "truncated JSON": (b'{"name": "Instance:StateChange"', "not JSON"),
    "JSON array": (b'[{"name": "x"}]', "JSON array, not an object"),
    "JSON string in base64": (b64(b'"just a string"'), "JSON string, not an object"),
    "JSON number in base64": (b64(b"42"), "JSON number, not an object"),
    "JSON null in base64": (b64(b"null"), "JSON null, not an object"),
    "no event name": (b'{"id": "1", "content": {}}', "'name' is missing"),
    "empty event name": (b'{"name": "  ", "content": {}}', "'name' is empty"),
    "name not a string": (b'{"name": 7, "content": {}}', "'name' must be a string, not a JSON number"),
    "content not an object": (b'{"name": "Instance:StateChange", "content": "Stopped"}', "'content' must be an object"),
    "data not an object": (b'{"specversion": "1.0", "type": "ecs:Instance:StateChange", "data": [1]}', "'data' must be an object"),
    "eventbridge type missing": (b'{"specversion": "1.0", "id": "1", "data": {}}', "'type' is missing"),
    "eventbridge bare prefix": (b'{"specversion": "1.0", "type": "ecs:", "data": {}}', "names no event"),
    "instance id wrong type": (b'{"name": "Instance:StateChange", "content": {"resourceId": ["i-1"]}}', "'content.resourceId' must be a string"),
    "state wrong type": (b'{"name": "Instance:StateChange", "content": {"state": true}}', "'content.state' must be a string, not a JSON boolean"),
    "bad timestamp": (b'{"name": "Instance:StateChange", "eventTime": "yesterday"}', "'eventTime' is not a timestamp"),
    "id wrong type": (b'{"name": "Instance:StateChange", "id": {"a": 1}}', "'id' must be a string"),
    "invalid base64": (b"eyJuYW1lIjoi*!!", "neither JSON nor base64"),
    "base64 of non UTF-8": (b64(b"\xff\xfe{\x00"), "not UTF-8"),
    "base64 of non JSON": (b64(b"name=Instance:StateChange"), "base64-decoded body is not JSON"),
    "base64 of nothing": (b"====", "neither JSON nor base64"),
    "raw non UTF-8": (b'{"name": "\xff"}', "body is not UTF-8"),
    "over 64 KiB": (b'{"name": "x", "pad": "' + b"a" * 70000 + b'"}', "over the 64 KiB"),
    "deep nesting": (b"{\"a\":" * 100000 + b"1" + b"}" * 100000, "over the 64 KiB"),
    "nested too deeply under the limit": (b'{"a":' * 10000 + b"1" + b"}" * 10000, "nested too deeply"),
}


@pytest.mark.parametrize("body,expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bodies_raise_one_line_invalid_event(body, expected):
    with pytest.raises(InvalidEvent) as info:
        parse_event(body)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and len(message) < 200
    assert isinstance(info.value, ValueError)


def test_wrong_argument_type_is_invalid_event_too():
    with pytest.raises(InvalidEvent, match="bytes or str"):
        parse_event(None)  # type: ignore[arg-type]
