"""parse_event: every sample envelope, both encodings, and a malformed corpus."""
import base64
import json
import re
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


# -- hostile bodies: each says what is actually wrong, in one short line ---------------------

HOSTILE = {
    "JSON null": (b"null", "body is JSON null, not an object"),
    "JSON true": (b"true", "body is a JSON boolean, not an object"),
    "JSON number that is also base64": (b"1234", "body is a JSON number, not an object"),
    "base64 of binary garbage": (b"xxxx", "its base64 decodes to binary data, not UTF-8 text"),
    "base64 of random bytes": (b64(bytes(range(256))), "its base64 decodes to binary data"),
    "raw binary": (b"\x00\x01\x02\xff", "neither JSON nor base64"),
    "over 4300 digits": (b'{"name": "x", "n": ' + b"9" * 5000 + b"}", "integer too long to convert"),
    "over 4300 digits, base64": (b64(b'{"n": ' + b"1" * 4400 + b"}"), "integer too long to convert"),
    "lone surrogate id": (b'{"name": "Instance:StateChange", "id": "\\ud800"}', "lone UTF-16 surrogate \\ud800"),
    "lone surrogate deep in content": (b'{"name": "x", "content": {"a": [{"b": "x\\udfffy"}]}}', "surrogate \\udfff"),
    "lone surrogate in a key": (b'{"name": "x", "content": {"\\udbff": 1}}', "surrogate \\udbff"),
    "reversed surrogate pair": (b'{"name": "x", "id": "\\ude00\\ud83d"}', "lone UTF-16 surrogate"),
    "NUL in the id": (b'{"name": "x", "id": "a\\u0000b"}', "field 'id' holds a control character (U+0000)"),
    "line break in the name": (b'{"name": "x\\nINFO forged line"}', "field 'name' holds a control character (U+000A)"),
    "NUL bytes outside strings": (b'{"name": "x"}\x00\x00', "not JSON"),
    "NaN": (b'{"name": "x", "content": {"v": NaN}}', "NaN is not a JSON number"),
    "Infinity": (b'{"name": "x", "v": -Infinity}', "-Infinity is not a JSON number"),
    "nested past the depth limit": (b'{"name": "x", "content": ' + b"[" * 70 + b"]" * 70 + b"}",
                                    "nested deeper than 64 levels"),
    "deep base64": (b64(b"[" * 20000 + b"]" * 20000), "nested too deeply"),
    "an id of 10,000 characters": (b'{"name": "x", "id": "' + b"i" * 10000 + b'"}', "10000 characters long"),
    "wrong type: content.instanceId": (b'{"name": "x", "content": {"instanceId": 5}}', "'content.instanceId' must be a string"),
    "wrong type: regionId": (b'{"name": "x", "regionId": []}', "'regionId' must be a string, not a JSON array"),
    "wrong type: level": (b'{"name": "x", "level": null, "eventTime": 3}', "'eventTime' must be a string"),
    "wrong type: eventbridge subject": (b'{"type": "ecs:x", "subject": {}}', "'subject' must be a string"),
    "wrong type: eventbridge data.state": (b'{"type": "ecs:Instance:StateChange", "data": {"state": 1.5}}',
                                           "'data.state' must be a string"),
    "wrong type: resourceId": (b'{"name": "x", "resourceId": false}', "'resourceId' must be a string"),
    "str with an undecodable byte": ('{"name": "\udcff"}', "body is not UTF-8"),
    "str with a lone surrogate": ('{"name": "\ud800"}', "body is not UTF-8"),
}


@pytest.mark.parametrize("body,expected", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_bodies_say_what_is_wrong_in_one_line(body, expected):
    with pytest.raises(InvalidEvent) as info:
        parse_event(body)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and len(message) < 200


def test_a_surrogate_pair_and_an_escaped_backslash_are_fine():
    ev = parse_event(b'{"name": "x", "id": "\\ud83d\\ude00", "content": {"path": "C:\\\\ud800"}}')
    assert ev.id == "\U0001F600" and ev.content["path"] == "C:\\ud800"


def test_raw_and_content_cannot_be_changed_but_copies_can():
    import copy
    import pickle

    ev = parse_event(b'{"name": "x", "content": {"tags": [{"k": "v"}], "n": 1}}')
    attempts = [lambda: ev.raw.__setitem__("name", "y"), lambda: ev.raw.pop("name"),
                lambda: ev.content.update(n=2), lambda: ev.content.setdefault("z", 1),
                lambda: ev.content["tags"].append(1), lambda: ev.content["tags"][0].clear(),
                lambda: ev.content["tags"].__setitem__(0, None), lambda: ev.content["tags"].sort()]
    for attempt in attempts:
        with pytest.raises(TypeError, match="read-only"):
            attempt()
    assert ev.content == {"tags": [{"k": "v"}], "n": 1} and isinstance(ev.content, dict)
    mine = copy.deepcopy(ev.raw)
    mine["content"]["tags"].append("x")
    assert type(mine) is dict and ev.content["tags"] == [{"k": "v"}]
    assert json.loads(json.dumps(ev.raw)) == pickle.loads(pickle.dumps(ev.raw)) == ev.raw


# -- properties: any input gives an Event or a short one-line InvalidEvent --------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PROPERTY = settings(derandomize=True, deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Strings with everything hostile in reach: lone surrogates, NULs, line breaks.
TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
           | st.integers(min_value=4290, max_value=4400).map(lambda n: _Raw("7" * n)))
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(TEXT, inner, max_size=4), max_leaves=30)
FIELDS = ("id", "name", "type", "specversion", "resourceId", "regionId", "eventTime", "time",
          "level", "subject", "aliyunregionid", "content", "data")
ENVELOPES = st.fixed_dictionaries({}, optional={
    **{f: JSONISH for f in FIELDS},
    "name": st.sampled_from(["Instance:StateChange", "Instance:PreemptibleInstanceInterruption"]) | JSONISH,
    "content": st.fixed_dictionaries({}, optional={k: JSONISH for k in
                                                  ("state", "action", "resourceId", "instanceId")})})


class _Raw(str):
    """A number too long to go through int(): written into the JSON text as is."""


def _dumps(value) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # lone surrogates are written as \\udXXX escapes


def _body(text: str, how: str) -> bytes | str:
    raw = text.encode("utf-8", "surrogatepass")
    return {"bytes": raw, "str": text, "base64": b64(raw)}[how]


def _problem(body) -> str | None:
    """What is wrong with how `parse_event` answered `body`, or None when it answered well:
    an `Event` fit for a log line and a store key, or `InvalidEvent` with one short line."""
    try:
        ev = parse_event(body)
    except InvalidEvent as exc:
        message = str(exc)
        if not message or "\n" in message or len(message) >= 300:
            return f"the reason is not one short line: {message!r}"
        return None
    except Exception as exc:  # anything but InvalidEvent escaping is the bug these tests hunt
        return f"{type(exc).__name__} escaped: {exc!r}"[:500]
    if not (isinstance(ev, Event) and isinstance(ev.name, str) and ev.name.strip()):
        return f"an event without a name: {ev!r}"
    for value in (ev.id, ev.name, ev.instance_id, ev.region, ev.state, ev.action, ev.level):
        if value and (len(value) > 512 or re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", value)):
            return f"a field unfit for a log line or a key: {value[:80]!r}"
        if value:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"a field with a lone surrogate: {value[:80]!r}"
    return None


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_give_an_event_or_a_one_line_reason(body):
    assert _problem(body) is None, _problem(body)
    assert _problem(b64(body)) is None, _problem(b64(body))


@PROPERTY
@given(JSONISH | ENVELOPES, st.sampled_from(["bytes", "str", "base64"]))
def test_any_json_ish_document_gives_an_event_or_a_one_line_reason(doc, how):
    body = _body(_dumps(doc), how)
    assert _problem(body) is None, _problem(body)


@PROPERTY
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", '{"a":']),
       st.sampled_from(["bytes", "base64"]))
def test_any_nesting_depth_gives_an_event_or_a_one_line_reason(depth, opener, how):
    closer = "]" if opener == "[" else "}"
    body = _body('{"name": "x", "content": ' + opener * depth + "1" * (opener != "[")
                 + closer * depth + "}", how)
    assert _problem(body) is None, _problem(body)
    if depth > 100:  # far deeper than any event (the limit is 64 levels): refused, saying so
        with pytest.raises(InvalidEvent, match="nested"):
            parse_event(body)
