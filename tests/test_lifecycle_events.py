"""ESS lifecycle-hook notifications as events: both envelopes, raw or base64, and every
lookalike refused with a reason that names the field (so it is dead-lettered saying why)."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings, strategies as st

from ecs_worker import InvalidEvent, parse_event

CONTENT = {"scalingGroupId": "asg-web", "scalingGroupName": "web", "scalingActivityId": "asa-1",
           "lifecycleHookId": "ash-1", "lifecycleHookName": "drain", "lifecycleActionToken": "TOKEN-1",
           "lifecycleTransition": "SCALE_IN", "defaultResult": "CONTINUE", "instanceIds": ["i-1", "i-2"],
           "notificationMetadata": "team=web"}


def cloudmonitor(**content):
    return {"product": "ESS", "regionId": "cn-hangzhou", "userId": "1690000000000000",
            "resourceArn": "acs:ess:cn-hangzhou:1690000000000000:scalinggroup/asg-web",
            "time": "2026-12-01T10:00:00.000Z", "content": {**CONTENT, **content}}


def eventbridge(**data):
    return {"specversion": "1.0", "id": "eb-1", "source": "acs.ess", "type": "ess:LifecycleHook",
            "subject": "acs:ess:cn-hangzhou:1690000000000000:scalinggroup/asg-web",
            "time": "2026-12-01T10:00:00Z", "aliyunregionid": "cn-hangzhou", "data": {**CONTENT, **data}}


@pytest.mark.parametrize("envelope", [cloudmonitor, eventbridge])
@pytest.mark.parametrize("wrap", [False, True])
def test_a_notification_in_either_envelope_raw_or_base64_is_one_lifecycle_event(envelope, wrap):
    text = json.dumps(envelope()).encode()
    event = parse_event(base64.b64encode(text) if wrap else text)
    lc = event.lifecycle
    assert event.name == "LifecycleHook:SCALE_IN" and event.id == "TOKEN-1" and event.region == "cn-hangzhou"
    assert (lc.scaling_group_id, lc.scaling_activity_id, lc.hook_id, lc.hook_name, lc.token) == (
        "asg-web", "asa-1", "ash-1", "drain", "TOKEN-1")
    assert lc.instance_ids == ("i-1", "i-2") and lc.default_result == "CONTINUE" and lc.metadata == "team=web"


@pytest.mark.parametrize("change, reason", [
    ({"lifecycleActionToken": None}, "field 'content.lifecycleActionToken' is missing"),
    ({"lifecycleTransition": "SCALE_SIDEWAYS"}, "not SCALE_IN or SCALE_OUT"),
    ({"defaultResult": "MAYBE"}, "field 'content.defaultResult' is 'MAYBE'"),
    ({"instanceIds": "i-1"}, "must be a non-empty array"),
    ({"instanceIds": []}, "must be a non-empty array"),
    ({"instanceIds": ["i-1", "rm -rf /"]}, "not all ECS instance ids"),
    ({"lifecycleHookId": "ash-1\nforged: line"}, "control character"),
    ({"scalingActivityId": 7}, "field 'content.scalingActivityId' must be a string"),
])
def test_a_lookalike_is_invalid_saying_why(change, reason):
    doc = cloudmonitor(**change)
    doc["content"] = {k: v for k, v in doc["content"].items() if v is not None}
    with pytest.raises(InvalidEvent, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_event(json.dumps(doc))


def test_a_token_in_an_ecs_envelope_is_still_read_as_a_notification():
    doc = {"product": "ECS", "name": "Instance:StateChange", "content": {"lifecycleActionToken": "T"}}
    with pytest.raises(InvalidEvent, match="lifecycle|missing"):
        parse_event(json.dumps(doc))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=6)


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(sorted(CONTENT)), value=JSON)
def test_any_value_in_any_field_is_an_event_or_invalid_naming_the_field(key, value):
    doc = cloudmonitor(**{key: value})
    try:
        event = parse_event(json.dumps(doc))
    except InvalidEvent as exc:
        assert "content" in str(exc) or "lifecycle" in str(exc), str(exc)
        return
    lc = event.lifecycle  # accepted: every field it carries is what was sent, well-formed
    assert lc is not None and lc.transition in ("SCALE_IN", "SCALE_OUT")
    assert lc.instance_ids and all(i.startswith("i-") and i.isprintable() for i in lc.instance_ids)
    assert lc.token and lc.hook_id and lc.scaling_activity_id and lc.scaling_group_id
